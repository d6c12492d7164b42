"""Versioned prompt templates: ``prompts/<name>/v<N>.j2``, rendered in a sandbox.

Templates are immutable once published: a change is a new version file. Undefined variables are errors,
and conversation text goes through the ``data`` filter, which escapes ``<``, ``>`` and ``&`` so the text
can never close the ``<conversation>`` block it sits in.
"""

from __future__ import annotations

import hashlib
import html
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from judge.errors import InputError, NotFoundError
from judge.resources import search_path

_VERSION_FILE = re.compile(r"^v(\d+)\.j2$")
SECTIONS = ("system", "user")


def neutralise(text: str) -> str:
    """Escape markup characters so untrusted text stays inside its delimiters."""
    return html.escape(text, quote=False)


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True, trim_blocks=True
    )
    env.filters["data"] = neutralise
    return env


@lru_cache(maxsize=32)
def _compiled(source: str) -> Template:
    """Compile a template once per process: compiling took longer than rendering a batch."""
    return _environment().from_string(source)


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True)
class PromptTemplate:
    """One published prompt version; ``hash`` is part of every grader fingerprint that uses it."""

    name: str
    version: int
    source: str

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()

    def render(self, **variables: Any) -> list[ChatMessage]:
        """Render the ``system`` and ``user`` blocks into chat messages."""
        try:
            template = _compiled(self.source)
            context = template.new_context(variables)
            messages = []
            for section in SECTIONS:
                block = template.blocks.get(section)
                if block is None:
                    raise InputError(f"prompt {self.name} v{self.version} has no {{% block {section} %}}")
                messages.append(ChatMessage(section, "".join(block(context)).strip()))
        except UndefinedError as error:
            raise InputError(f"prompt {self.name} v{self.version}: {error.message}") from None
        except TemplateSyntaxError as error:
            raise InputError(
                f"prompt {self.name} v{self.version} line {error.lineno}: {error.message}"
            ) from None
        return messages


def _versions(name: str, extra: list[Path] | None) -> dict[int, Path]:
    found: dict[int, Path] = {}
    for folder in reversed(search_path("prompts", extra)):
        for path in (folder / name).glob("v*.j2"):
            match = _VERSION_FILE.match(path.name)
            if match:
                found[int(match.group(1))] = path
    return found


def load_prompt(name: str, version: int | None = None, extra: list[Path] | None = None) -> PromptTemplate:
    """Load ``name`` at ``version`` (the latest when None)."""
    versions = _versions(name, extra)
    if not versions:
        raise NotFoundError("prompt", name)
    chosen = max(versions) if version is None else version
    if chosen not in versions:
        raise NotFoundError(f"version of prompt {name!r}", f"v{chosen}", (f"v{v}" for v in versions))
    return PromptTemplate(name, chosen, versions[chosen].read_text(encoding="utf-8"))
