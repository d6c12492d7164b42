"""Writing and reading conversations: idempotent ingestion with revisions, and selection for a run.

Both sides are bulk Core statements rather than ORM objects: ingestion writes a conversation, its
messages and its signals as a few multi-row INSERTs per call, and a run reads only the columns it needs,
chunk by chunk, loading messages only for the conversations it must actually send to a grader.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from enum import StrEnum
from typing import Any, NamedTuple

from pydantic import BaseModel
from sqlalchemy import Table, func, insert
from sqlmodel import Session, col, select

from judge.conversation import Conversation, Message, Role
from judge.rubric import Signal
from judge.signals import SignalHit, detect
from judge.store.db import get_or_create
from judge.store.tables import ConversationRecord, MessageRecord, Project, SignalRow, utcnow

DEFAULT_PROJECT = "default"
_ROLES = {role.value: role for role in Role}
_SIGNALS = {signal.value: signal for signal in Signal}


class Outcome(StrEnum):
    created = "created"
    unchanged = "unchanged"
    new_revision = "new_revision"
    rejected = "rejected"


class IngestItem(BaseModel):
    id: str
    outcome: Outcome
    revision: int | None = None
    error: str | None = None


def _table(model: Any) -> Table:
    table: Table = model.__table__
    return table


def ensure_project(session: Session, name: str = DEFAULT_PROJECT) -> Project:
    query = select(Project).where(Project.name == name)
    return get_or_create(session, lambda: session.exec(query).first(), lambda: Project(name=name))


def _revisions(
    session: Session, project_id: int, external_ids: Sequence[str]
) -> dict[str, list[ConversationRecord]]:
    found: dict[str, list[ConversationRecord]] = {}
    query = select(ConversationRecord).where(
        ConversationRecord.project_id == project_id, col(ConversationRecord.external_id).in_(external_ids)
    )
    for record in session.exec(query):
        found.setdefault(record.external_id, []).append(record)
    return found


class _New:
    """A revision to insert, with the conversation it stores."""

    def __init__(self, row: dict[str, Any], conversation: Conversation) -> None:
        self.row = row
        self.conversation = conversation

    @property
    def revision(self) -> int:
        return int(self.row["revision"])

    @property
    def content_hash(self) -> str:
        return str(self.row["content_hash"])

    def set_latest(self, latest: bool) -> None:
        self.row["is_latest"] = latest


class _Stored:
    """A revision already in the database."""

    def __init__(self, record: ConversationRecord) -> None:
        self.record = record
        self.revision = record.revision
        self.content_hash = record.content_hash

    def set_latest(self, latest: bool) -> None:
        if self.record.is_latest != latest:
            self.record.is_latest = latest


def store_conversations(
    session: Session, project_id: int, conversations: Sequence[Conversation]
) -> list[IngestItem]:
    """Store new conversations and new revisions in one transaction; unchanged ones are left alone."""
    existing = _revisions(session, project_id, [c.id for c in conversations])
    revisions: dict[str, list[_Stored | _New]] = {
        external_id: [_Stored(r) for r in records] for external_id, records in existing.items()
    }
    items: list[IngestItem] = []
    created: list[_New] = []
    now = utcnow()
    for conversation in conversations:
        content_hash = conversation.content_hash()
        known = revisions.setdefault(conversation.id, [])
        latest = max(known, key=lambda r: r.revision, default=None)
        if latest is not None and latest.content_hash == content_hash:
            items.append(IngestItem(id=conversation.id, outcome=Outcome.unchanged, revision=latest.revision))
            continue
        same = next((r for r in known if r.content_hash == content_hash), None)
        for revision in known:
            revision.set_latest(revision is same)
        if same is not None:
            items.append(IngestItem(id=conversation.id, outcome=Outcome.new_revision, revision=same.revision))
            continue
        number = (latest.revision + 1) if latest else 1
        new = _New(_row(project_id, conversation, content_hash, number, now), conversation)
        known.append(new)
        created.append(new)
        outcome = Outcome.new_revision if latest else Outcome.created
        items.append(IngestItem(id=conversation.id, outcome=outcome, revision=number))
    session.flush()
    _insert(session, created)
    session.commit()
    return items


def _row(
    project_id: int, conversation: Conversation, content_hash: str, revision: int, now: Any
) -> dict[str, Any]:
    return {
        "project_id": project_id,
        "external_id": conversation.id,
        "revision": revision,
        "is_latest": True,
        "content_hash": content_hash,
        "end_user_id": conversation.end_user_id,
        "language": conversation.language,
        "meta": dict(conversation.metadata),
        "message_count": len(conversation.messages),
        "started_at": conversation.started_at,
        "created_at": now,
    }


def _insert(session: Session, created: list[_New]) -> None:
    """The new revisions, then their messages and signals: three multi-row INSERTs, not one flush each."""
    if not created:
        return
    table = _table(ConversationRecord)
    ids = session.execute(
        insert(table).returning(table.c.id, sort_by_parameter_order=True), [new.row for new in created]
    ).scalars()
    messages: list[dict[str, Any]] = []
    signals: list[dict[str, Any]] = []
    for record_id, new in zip(ids, created, strict=True):
        for position, message in enumerate(new.conversation.messages):
            messages.append(
                {
                    "conversation_id": record_id,
                    "position": position,
                    "role": message.role.value,
                    "content": message.content,
                    "timestamp": message.timestamp,
                }
            )
        for hit in detect(new.conversation):
            signals.append(
                {
                    "conversation_id": record_id,
                    "signal": hit.signal.value,
                    "evidence": hit.evidence,
                    "score": hit.score,
                }
            )
    session.execute(insert(_table(MessageRecord)), messages)
    if signals:
        session.execute(insert(_table(SignalRow)), signals)


def to_model(record: ConversationRecord, messages: Sequence[MessageRecord]) -> Conversation:
    return Conversation(
        id=record.external_id,
        end_user_id=record.end_user_id,
        metadata=record.meta,
        messages=[Message(role=Role(m.role), content=m.content, timestamp=m.timestamp) for m in messages],
    )


def count_latest(session: Session, project_id: int, ids: Sequence[str] | None = None) -> int:
    query = (
        select(func.count())
        .select_from(ConversationRecord)
        .where(ConversationRecord.project_id == project_id, col(ConversationRecord.is_latest))
    )
    if ids is not None:
        query = query.where(col(ConversationRecord.external_id).in_(ids))
    return int(session.exec(query).one())


class Selected(NamedTuple):
    """A conversation selected for a run: what deciding between cache and grader needs, no messages."""

    id: int
    external_id: str
    content_hash: str


def select_latest(
    session: Session,
    project_id: int,
    ids: Sequence[str] | None = None,
    limit: int | None = None,
    chunk: int = 500,
) -> Iterator[list[Selected]]:
    """The latest revision of each selected conversation in id order, ``chunk`` at a time (keyset
    pagination), so a selection of millions never sits in memory at once."""
    table = _table(ConversationRecord)
    last_id = 0
    remaining = limit
    while remaining is None or remaining > 0:
        size = chunk if remaining is None else min(chunk, remaining)
        query = (
            select(table.c.id, table.c.external_id, table.c.content_hash)
            .where(table.c.project_id == project_id, table.c.is_latest, table.c.id > last_id)
            .order_by(table.c.id)
            .limit(size)
        )
        if ids is not None:
            query = query.where(table.c.external_id.in_(ids))
        rows = [Selected(*row) for row in session.execute(query)]
        if not rows:
            return
        yield rows
        last_id = rows[-1].id
        if remaining is not None:
            remaining -= len(rows)


def load_conversations(session: Session, record_ids: Sequence[int]) -> dict[int, Conversation]:
    """The conversations stored under ``record_ids``, messages in order. They were validated when they
    were stored, so they are rebuilt without validating them again."""
    if not record_ids:
        return {}
    table, messages = _table(ConversationRecord), _table(MessageRecord)
    found: dict[int, list[Message]] = {record_id: [] for record_id in record_ids}
    query = (
        select(messages.c.conversation_id, messages.c.role, messages.c.content, messages.c.timestamp)
        .where(messages.c.conversation_id.in_(record_ids))
        .order_by(messages.c.conversation_id, messages.c.position)
    )
    construct = Message.model_construct
    for record_id, role, content, timestamp in session.execute(query):
        found[record_id].append(construct(role=_ROLES[role], content=content, timestamp=timestamp))
    records = select(table.c.id, table.c.external_id, table.c.end_user_id, table.c.meta).where(
        table.c.id.in_(record_ids)
    )
    return {
        record_id: Conversation.model_construct(
            id=external_id, messages=found[record_id], end_user_id=end_user_id, metadata=dict(meta or {})
        )
        for record_id, external_id, end_user_id, meta in session.execute(records)
    }


def load_signals(session: Session, record_ids: Sequence[int]) -> dict[int, list[SignalHit]]:
    """The deterministic signals found when each conversation was stored, in the order ``detect`` gave
    them: a grader that uses them reads them here instead of computing them again."""
    if not record_ids:
        return {}
    table = _table(SignalRow)
    query = (
        select(table.c.conversation_id, table.c.signal, table.c.evidence, table.c.score)
        .where(table.c.conversation_id.in_(record_ids))
        .order_by(table.c.conversation_id, table.c.id)
    )
    found: dict[int, list[SignalHit]] = {}
    for record_id, signal, evidence, score in session.execute(query):
        hit = SignalHit.model_construct(signal=_SIGNALS[signal], evidence=list(evidence), score=float(score))
        found.setdefault(record_id, []).append(hit)
    return found
