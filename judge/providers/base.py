"""The Provider protocol and the registry. Nothing outside this package knows which providers exist.

A grader is named on the command line or in the API as ``local``, ``fake``, ``<provider>:<model>`` or a
bare litellm model name (``openai/gpt-4o-mini``, ``ollama/llama3``), which means ``litellm:<model>``.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, field_validator

from judge.batching import PreparedConversation
from judge.errors import NotFoundError
from judge.rubric import Rubric
from judge.signals import SignalHit
from judge.verdict import ConversationVerdicts

BUILTIN_MODULES = (
    "judge.providers.local",
    "judge.providers.litellm",
    "judge.providers.fake",
    "judge.providers.signals_only",
)
UNFINGERPRINTED = frozenset({"api_base", "timeout", "max_retries"})
"""Parameters that change where or how patiently we call, not what the grader answers."""
SECRET_PARAMS = frozenset({"api_key", "aws_secret_access_key", "aws_session_token", "azure_ad_token"})
"""Passed to the provider, never stored: not with the grader, not with a run's options."""


def without_secrets(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k not in SECRET_PARAMS}


class GraderSpec(BaseModel):
    """What identifies a grader apart from the rubric: its part of the fingerprint (DESIGN.md)."""

    model_config = ConfigDict(frozen=True)

    provider: str
    model: str
    params: dict[str, Any] = Field(default_factory=dict)
    prompt_name: str
    prompt_version: int
    prompt_hash: str

    @field_validator("params")
    @classmethod
    def _drop_secrets(cls, params: dict[str, Any]) -> dict[str, Any]:
        return without_secrets(params)

    @property
    def fingerprint(self) -> str:
        """Stable id of this grader: a hash of everything that can change its answers."""
        relevant = self.model_dump(mode="json")
        relevant["params"] = {k: v for k, v in self.params.items() if k not in UNFINGERPRINTED}
        blob = json.dumps(relevant, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    @property
    def label(self) -> str:
        return self.provider if self.provider == self.model else f"{self.provider}:{self.model}"


@dataclass(frozen=True)
class JudgeRequest:
    """One batch: K conversations, each with its signals, to be judged on ``dimensions``."""

    rubric: Rubric
    dimensions: tuple[str, ...]
    conversations: list[PreparedConversation]
    signals: dict[str, list[SignalHit]] = field(default_factory=dict)


@dataclass
class Usage:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    retries: int = 0

    def add(self, other: Usage) -> None:
        for name in ("calls", "prompt_tokens", "completion_tokens", "cost_usd", "latency_s", "retries"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class JudgeReply:
    """Verdicts per conversation id, what the call cost, and the exact exchange for reviewers."""

    verdicts: dict[str, ConversationVerdicts]
    usage: Usage
    request: Any = None
    raw_reply: str | None = None


class Provider(Protocol):
    """A grader. ``judge`` raises ``InvalidReplyError`` when the reply does not fit the rubric after its
    re-asks, and ``ProviderError`` when the provider cannot be reached after its retries."""

    spec: GraderSpec

    async def judge(self, request: JudgeRequest) -> JudgeReply: ...


@runtime_checkable
class ConnectionLimited(Protocol):
    """A provider that can hold its calls in flight to ``limit`` itself, at the connection: then the
    runner prepares more batches than that (their prompts rendered, their reply models built) so one is
    sent the moment a reply frees a connection, and a reply's parsing never keeps a connection idle."""

    def connections(self, limit: int) -> AbstractAsyncContextManager[None]: ...


ProviderFactory = Callable[..., Provider]
_REGISTRY: dict[str, ProviderFactory] = {}


def register(name: str) -> Callable[[ProviderFactory], ProviderFactory]:
    """Class decorator: make a provider available under ``name``."""

    def decorate(factory: ProviderFactory) -> ProviderFactory:
        _REGISTRY[name] = factory
        return factory

    return decorate


def registered() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def _load_builtins() -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def parse_grader(name: str) -> tuple[str, str | None]:
    """``local`` -> (local, None); ``litellm:openai/gpt-4o`` -> (litellm, openai/gpt-4o); a bare model
    name that is not a registered provider -> (litellm, name)."""
    _load_builtins()
    if name in _REGISTRY:
        return name, None
    provider, sep, model = name.partition(":")
    if sep and provider in _REGISTRY:
        return provider, model
    if "/" in name:
        return "litellm", name
    raise NotFoundError("grader", name, [*_REGISTRY, "<litellm model, e.g. openai/gpt-4o-mini>"])


def create(name: str, **options: Any) -> Provider:
    """Build the grader called ``name`` (see ``parse_grader``) with provider ``options``."""
    provider, model = parse_grader(name)
    if model is not None:
        options["model"] = model
    return _REGISTRY[provider](**options)
