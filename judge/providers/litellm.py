"""Any model litellm can reach, asked through instructor for the rubric's typed batch reply.

Validation failures are re-asked by instructor (``reasks`` times, with the error shown to the model);
transient HTTP failures are retried with backoff honouring ``Retry-After``. What still fails raises
``InvalidReplyError`` or ``ProviderError`` for the runner to split or record as unscored.
"""

from __future__ import annotations

import gc
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache
from typing import Any

from pydantic import ValidationError

from judge.errors import InvalidReplyError, ProviderError
from judge.prompts import PromptTemplate, load_prompt
from judge.providers.base import GraderSpec, JudgeReply, JudgeRequest, Usage, register
from judge.providers.batch_model import ReplyModels, normalise
from judge.providers.capabilities import mode_for
from judge.providers.retries import is_transient, retrying

DEFAULT_PARAMS: dict[str, Any] = {"temperature": 0.0}


@cache
def _client(mode_name: str) -> Any:
    import instructor
    import litellm

    litellm.suppress_debug_info = True
    gc.freeze()  # litellm's import leaves ~400k long-lived objects: keep full collections off them
    return instructor.from_litellm(litellm.acompletion, mode=instructor.Mode[mode_name])


def _cost(completion: Any) -> float:
    """The price litellm already worked out for its logging, else worked out here."""
    hidden = getattr(completion, "_hidden_params", None)
    if isinstance(hidden, dict) and "response_cost" in hidden:
        known = hidden["response_cost"]  # None: a model missing from the cost map, no price
        return float(known) if isinstance(known, int | float) else 0.0
    import litellm

    try:
        return float(litellm.completion_cost(completion_response=completion) or 0.0)
    except Exception:  # models missing from the cost map have no price; that is not an error
        return 0.0


@register("litellm")
class LiteLLMProvider:
    default_batch_size = 10
    counts_tokens = True
    """Conversations are packed into calls under a token budget and truncated to fit (``batching``)."""
    uses_signals = False
    """The prompt does not show the deterministic signals, so the runner need not compute them."""

    def __init__(
        self,
        model: str,
        prompt: str = "judge",
        prompt_version: int | None = None,
        reasks: int = 2,
        attempts: int = 6,
        **params: Any,
    ) -> None:
        self.template: PromptTemplate = load_prompt(prompt, prompt_version)
        self.mode = str(params.pop("mode", None) or mode_for(model))
        self.reasks, self.attempts = reasks, attempts
        self.params = {**DEFAULT_PARAMS, **params}
        self.spec = GraderSpec(
            provider="litellm",
            model=model,
            params={**self.params, "mode": self.mode},
            prompt_name=self.template.name,
            prompt_version=self.template.version,
            prompt_hash=self.template.hash,
        )
        self._models = ReplyModels()
        self._session: Any = None
        """The aiohttp session of ``connections``: litellm sends every call of a run through it."""

    @asynccontextmanager
    async def connections(self, limit: int) -> AsyncIterator[None]:
        """At most ``limit`` calls in flight, counted where they are: at the connection pool of one
        HTTP session shared by the run's calls (litellm's ``shared_session``). A call waits for a
        connection only once its request is built, and frees it as soon as its reply is read."""
        import aiohttp

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit)) as session:
            self._session = session
            try:
                yield
            finally:
                self._session = None

    def messages(self, request: JudgeRequest) -> list[dict[str, str]]:
        dimensions = [(name, request.rubric.dimension(name)) for name in request.dimensions]
        rendered = self.template.render(conversations=request.conversations, dimensions=dimensions)
        return [{"role": m.role, "content": m.content} for m in rendered]

    async def judge(self, request: JudgeRequest) -> JudgeReply:
        from instructor.core.exceptions import IncompleteOutputException, InstructorRetryException
        from instructor.core.hooks import Hooks

        messages = self.messages(request)
        counts = {c.id: len(c.conversation.messages) for c in request.conversations}
        model = self._models.model(request.rubric, request.dimensions, counts)
        sent = {"model": self.spec.model, "messages": messages, "mode": self.mode}
        usage = Usage()
        hooks = Hooks()
        hooks.on("completion:response", lambda _response: setattr(usage, "calls", usage.calls + 1))
        started = time.perf_counter()
        try:
            async for attempt in retrying(self.attempts):
                with attempt:
                    if attempt.retry_state.attempt_number > 1:
                        usage.retries += 1
                    try:
                        parsed, completion = await _client(self.mode).chat.completions.create_with_completion(
                            model=self.spec.model,
                            messages=messages,
                            response_model=model,
                            max_retries=self.reasks,
                            num_retries=0,
                            hooks=hooks,
                            **({"shared_session": self._session} if self._session is not None else {}),
                            **self.params,
                        )
                    except IncompleteOutputException as error:
                        _count_tokens(usage, getattr(error, "total_usage", None), started)
                        raw = _raw(getattr(error, "last_completion", None))
                        failed = JudgeReply(verdicts={}, usage=usage, request=sent, raw_reply=raw)
                        raise InvalidReplyError("reply cut off at max_tokens", failed) from None
                    except InstructorRetryException as error:
                        cause = error.__cause__
                        if is_transient(cause) and cause is not None:
                            raise cause from None
                        _count_tokens(usage, getattr(error, "total_usage", None), started)
                        raw = _raw(getattr(error, "last_completion", None))
                        failed = JudgeReply(verdicts={}, usage=usage, request=sent, raw_reply=raw)
                        raise InvalidReplyError(_describe(error), failed) from None
        except InvalidReplyError:
            raise
        except Exception as error:
            raise ProviderError(f"{type(error).__name__}: {error}") from None
        _count_tokens(usage, getattr(completion, "usage", None), started)
        usage.cost_usd = _cost(completion)
        return JudgeReply(
            verdicts=normalise(parsed, request.dimensions),
            usage=usage,
            request=sent,
            raw_reply=_raw(completion),
        )


def _count_tokens(usage: Usage, reported: Any, started: float) -> None:
    """Add the tokens instructor summed over every attempt (re-asks included)."""
    usage.prompt_tokens += int(getattr(reported, "prompt_tokens", 0) or 0)
    usage.completion_tokens += int(getattr(reported, "completion_tokens", 0) or 0)
    usage.latency_s = time.perf_counter() - started


def _raw(completion: Any) -> str | None:
    if completion is None:
        return None
    return completion.model_dump_json() if hasattr(completion, "model_dump_json") else str(completion)


def _describe(error: Any) -> str:
    """Why the last attempt failed, field by field: what a reviewer of an unscored judgement needs."""
    attempts = getattr(error, "failed_attempts", None) or []
    last = attempts[-1].exception if attempts else (error.__cause__ or error)
    if isinstance(last, ValidationError):
        detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'reply'}: {e['msg']}" for e in last.errors())
    else:
        detail = " ".join(str(last).split())
    return f"reply failed validation after {error.n_attempts} attempt(s): {detail[:300]}"
