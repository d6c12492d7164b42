"""Conversations coming in: the input models, JSONL and OpenAI chat-format parsing, content hashing."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MetadataValue = str | int | float | bool | None


class Role(StrEnum):
    user = "user"
    assistant = "assistant"
    system = "system"
    tool = "tool"


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role
    content: str
    timestamp: datetime | None = None


class Conversation(BaseModel):
    """One conversation between an end user and the assistant, as submitted."""

    model_config = ConfigDict(extra="forbid")

    id: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:@/-]+$")]
    messages: Annotated[list[Message], Field(min_length=1)]
    end_user_id: str | None = None
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)

    @field_validator("messages")
    @classmethod
    def _has_user_message(cls, messages: list[Message]) -> list[Message]:
        if not any(m.role is Role.user for m in messages):
            raise ValueError("a conversation needs at least one user message")
        return messages

    def content_hash(self) -> str:
        """Hash of what a grader sees (messages and metadata); the id and timestamps do not count."""
        payload = {
            "messages": [[m.role.value, m.content] for m in self.messages],
            "metadata": self.metadata,
        }
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    @property
    def started_at(self) -> datetime | None:
        return next((m.timestamp for m in self.messages if m.timestamp is not None), None)

    @property
    def language(self) -> str | None:
        value = self.metadata.get("language")
        return value if isinstance(value, str) else None


class OpenAIChat(BaseModel):
    """The OpenAI chat shape: ``{"messages": [...]}`` with an optional id, user and metadata."""

    model_config = ConfigDict(extra="ignore")

    id: str | None = None
    user: str | None = None
    messages: list[dict[str, Any]]
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)


def from_openai(record: dict[str, Any], fallback_id: str) -> Conversation:
    """Convert an OpenAI chat record; content given as a list of parts is joined from its text parts."""
    chat = OpenAIChat.model_validate(record)
    messages = []
    for raw in chat.messages:
        content = raw.get("content")
        if isinstance(content, list):
            content = "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
        role = "system" if raw.get("role") == "developer" else raw.get("role")
        messages.append({"role": role, "content": content})
    return Conversation.model_validate(
        {
            "id": chat.id or fallback_id,
            "messages": messages,
            "end_user_id": chat.user,
            "metadata": chat.metadata,
        }
    )


def parse_record(record: Any, fallback_id: str) -> Conversation:
    """Parse one record: our shape when it has an ``id``, else the OpenAI shape (``{"messages": [...]}``)."""
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    if "id" in record and "user" not in record:
        return Conversation.model_validate(record)
    return from_openai(record, fallback_id)


def describe_validation_error(error: ValidationError) -> str:
    """One line per problem, each naming the field path, e.g. ``messages.2.role: Input should be ...``."""
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(record)"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


@dataclass(frozen=True)
class LineError:
    """A line of an input file that could not be read; ``line`` counts from 1."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


def read_jsonl(path: Path) -> Iterator[Conversation | LineError]:
    """Yield each line as a Conversation or a LineError, so valid lines land even when others fail."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            yield parse_line(raw, number, fallback_id=f"{path.stem}-{number}")


def parse_line(raw: bytes, number: int, fallback_id: str) -> Conversation | LineError:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return LineError(number, f"not valid UTF-8 (byte {error.start})")
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        return LineError(number, f"invalid JSON: {error.msg} at column {error.colno}")
    try:
        return parse_record(record, fallback_id)
    except ValidationError as error:
        return LineError(number, describe_validation_error(error))
    except ValueError as error:
        return LineError(number, str(error))
