"""SQLModel tables. Judgement labels are stored one row per conversation x run x dimension x label, so
every aggregate is a plain indexed GROUP BY."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def _json(**kwargs: Any) -> Any:
    return Field(default_factory=dict, sa_column=Column(JSON, nullable=False), **kwargs)


def _when(nullable: bool = False, index: bool = False) -> Any:
    column = Column(DateTime(timezone=True), nullable=nullable, index=index)
    return (
        Field(default=None, sa_column=column) if nullable else Field(default_factory=utcnow, sa_column=column)
    )


class Project(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, max_length=100)
    key_hash: str | None = Field(default=None, max_length=128, index=True)
    created_at: datetime = _when()


class ConversationRecord(SQLModel, table=True):
    """One revision of a submitted conversation; a changed resubmission is a new revision."""

    __tablename__ = "conversation"
    __table_args__ = (
        UniqueConstraint("project_id", "external_id", "revision"),
        UniqueConstraint("project_id", "external_id", "content_hash"),
        Index("ix_conversation_latest", "project_id", "is_latest", "started_at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id")
    external_id: str = Field(max_length=200)
    revision: int = 1
    is_latest: bool = True
    content_hash: str = Field(max_length=64)
    end_user_id: str | None = Field(default=None, max_length=200)
    language: str | None = Field(default=None, max_length=20, index=True)
    meta: dict[str, Any] = _json()
    message_count: int = 0
    started_at: datetime | None = _when(nullable=True)
    created_at: datetime = _when()


class MessageRecord(SQLModel, table=True):
    __tablename__ = "message"
    __table_args__ = (UniqueConstraint("conversation_id", "position"),)
    id: int | None = Field(default=None, primary_key=True)
    conversation_id: int = Field(foreign_key="conversation.id")
    position: int
    role: str = Field(max_length=20)
    content: str = Field(sa_column=Column(Text, nullable=False))
    timestamp: datetime | None = _when(nullable=True)


class SignalRow(SQLModel, table=True):
    """A deterministic signal found in a conversation revision (whatever the grader)."""

    __tablename__ = "signal"
    __table_args__ = (UniqueConstraint("conversation_id", "signal"),)
    id: int | None = Field(default=None, primary_key=True)
    conversation_id: int = Field(foreign_key="conversation.id", index=True)
    signal: str = Field(max_length=40, index=True)
    evidence: list[int] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    score: float


class RubricVersion(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("name", "version", "content_hash"),)
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=60)
    version: int
    content_hash: str = Field(max_length=64)
    body: dict[str, Any] = _json()
    created_at: datetime = _when()


class Grader(SQLModel, table=True):
    """A grader fingerprint: provider, model, parameters and prompt version (DESIGN.md)."""

    id: str = Field(primary_key=True, max_length=64)
    provider: str = Field(max_length=40)
    model: str = Field(max_length=200)
    params: dict[str, Any] = _json()
    prompt_name: str = Field(max_length=60)
    prompt_version: int
    prompt_hash: str = Field(max_length=64)
    created_at: datetime = _when()


class Run(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    rubric_version_id: int = Field(foreign_key="rubricversion.id")
    grader_id: str = Field(foreign_key="grader.id")
    dimensions: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    options: dict[str, Any] = _json()
    batch_size: int
    concurrency: int
    status: str = Field(default="running", max_length=20, index=True)
    error: str | None = Field(default=None, sa_column=Column(Text))
    total: int = 0
    conversations: int = 0
    judged: int = 0
    cache_hits: int = 0
    unscored: int = 0
    calls: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    started_at: datetime = _when()
    finished_at: datetime | None = _when(nullable=True)


class ProviderCall(SQLModel, table=True):
    """One batch sent to a provider: what it cost and the exact exchange, for reviewers."""

    __tablename__ = "provider_call"
    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="run.id", index=True)
    conversations: int
    dimensions: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    status: str = Field(max_length=20)
    error: str | None = Field(default=None, sa_column=Column(Text))
    calls: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    request: Any = Field(default=None, sa_column=Column(JSON, nullable=True))
    raw_reply: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = _when()


class Judgement(SQLModel, table=True):
    """The outcome for one conversation x run x dimension: scored (with label rows) or unscored."""

    __table_args__ = (
        UniqueConstraint("run_id", "conversation_id", "dimension"),
        Index("ix_judgement_run_dimension", "run_id", "dimension", "status"),
        Index("ix_judgement_latest", "conversation_id", "dimension", "run_id"),
    )
    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="run.id")
    conversation_id: int = Field(foreign_key="conversation.id")
    dimension: str = Field(max_length=40)
    status: str = Field(max_length=20)
    reason: str | None = Field(default=None, sa_column=Column(Text))
    suggestion: str | None = Field(default=None, max_length=200)
    truncated: bool = False
    cache_hit: bool = False
    call_id: int | None = Field(default=None, foreign_key="provider_call.id")
    created_at: datetime = _when()


class JudgementLabel(SQLModel, table=True):
    """One label of a judgement; denormalised (run, conversation, dimension) for plain GROUP BYs."""

    __tablename__ = "judgement_label"
    __table_args__ = (
        UniqueConstraint("judgement_id", "label"),
        Index("ix_label_run_dimension_label", "run_id", "dimension", "label"),
        Index("ix_label_conversation", "conversation_id", "run_id"),
    )
    id: int | None = Field(default=None, primary_key=True)
    judgement_id: int = Field(foreign_key="judgement.id")
    run_id: int = Field(foreign_key="run.id")
    conversation_id: int = Field(foreign_key="conversation.id")
    dimension: str = Field(max_length=40)
    label: str = Field(max_length=80)
    evidence: list[int] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    reason: str | None = Field(default=None, sa_column=Column(Text))
