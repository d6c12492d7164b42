"""Writing and reading conversations: idempotent ingestion with revisions, and selection for a run."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from enum import StrEnum

from pydantic import BaseModel
from sqlmodel import Session, col, select

from judge.conversation import Conversation, Message, Role
from judge.signals import detect
from judge.store.tables import ConversationRecord, MessageRecord, Project, SignalRow

DEFAULT_PROJECT = "default"


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


def ensure_project(session: Session, name: str = DEFAULT_PROJECT) -> Project:
    project = session.exec(select(Project).where(Project.name == name)).first()
    if project is None:
        project = Project(name=name)
        session.add(project)
        session.commit()
    return project


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


def store_conversations(
    session: Session, project_id: int, conversations: Sequence[Conversation]
) -> list[IngestItem]:
    """Store new conversations and new revisions in one transaction; unchanged ones are left alone."""
    existing = _revisions(session, project_id, [c.id for c in conversations])
    items: list[IngestItem] = []
    seen: dict[str, ConversationRecord] = {}
    for conversation in conversations:
        content_hash = conversation.content_hash()
        revisions = existing.get(conversation.id, [])
        if conversation.id in seen:
            revisions = [*revisions, seen[conversation.id]]
        latest = max(revisions, key=lambda r: r.revision, default=None)
        if latest is not None and latest.content_hash == content_hash:
            items.append(IngestItem(id=conversation.id, outcome=Outcome.unchanged, revision=latest.revision))
            continue
        same = next((r for r in revisions if r.content_hash == content_hash), None)
        for record in revisions:
            record.is_latest = False
            session.add(record)
        if same is not None:
            same.is_latest = True
            session.add(same)
            items.append(IngestItem(id=conversation.id, outcome=Outcome.new_revision, revision=same.revision))
            continue
        record = _record(project_id, conversation, content_hash, (latest.revision + 1) if latest else 1)
        session.add(record)
        session.flush()
        _add_children(session, record, conversation)
        seen[conversation.id] = record
        outcome = Outcome.new_revision if latest else Outcome.created
        items.append(IngestItem(id=conversation.id, outcome=outcome, revision=record.revision))
    session.commit()
    return items


def _record(
    project_id: int, conversation: Conversation, content_hash: str, revision: int
) -> ConversationRecord:
    return ConversationRecord(
        project_id=project_id,
        external_id=conversation.id,
        revision=revision,
        content_hash=content_hash,
        end_user_id=conversation.end_user_id,
        language=conversation.language,
        meta=dict(conversation.metadata),
        message_count=len(conversation.messages),
        started_at=conversation.started_at,
    )


def _add_children(session: Session, record: ConversationRecord, conversation: Conversation) -> None:
    assert record.id is not None
    for position, message in enumerate(conversation.messages):
        session.add(
            MessageRecord(
                conversation_id=record.id,
                position=position,
                role=message.role.value,
                content=message.content,
                timestamp=message.timestamp,
            )
        )
    for hit in detect(conversation):
        session.add(
            SignalRow(
                conversation_id=record.id, signal=hit.signal.value, evidence=hit.evidence, score=hit.score
            )
        )


def to_model(record: ConversationRecord, messages: Iterable[MessageRecord]) -> Conversation:
    return Conversation(
        id=record.external_id,
        end_user_id=record.end_user_id,
        metadata=record.meta,
        messages=[Message(role=Role(m.role), content=m.content, timestamp=m.timestamp) for m in messages],
    )


def count_latest(session: Session, project_id: int, ids: Sequence[str] | None = None) -> int:
    from sqlalchemy import func

    query = (
        select(func.count())
        .select_from(ConversationRecord)
        .where(ConversationRecord.project_id == project_id, col(ConversationRecord.is_latest))
    )
    if ids is not None:
        query = query.where(col(ConversationRecord.external_id).in_(ids))
    return int(session.exec(query).one())


def iter_latest(
    session: Session,
    project_id: int,
    ids: Sequence[str] | None = None,
    limit: int | None = None,
    chunk: int = 500,
) -> Iterator[tuple[ConversationRecord, Conversation]]:
    """Stream the latest revision of each selected conversation in id order, ``chunk`` at a time, so a
    selection of millions never sits in memory at once."""
    last_id = 0
    remaining = limit
    while remaining is None or remaining > 0:
        size = chunk if remaining is None else min(chunk, remaining)
        query = (
            select(ConversationRecord)
            .where(ConversationRecord.project_id == project_id, col(ConversationRecord.is_latest))
            .where(col(ConversationRecord.id) > last_id)
            .order_by(col(ConversationRecord.id))
            .limit(size)
        )
        if ids is not None:
            query = query.where(col(ConversationRecord.external_id).in_(ids))
        records = list(session.exec(query))
        if not records:
            return
        messages: dict[int, list[MessageRecord]] = {}
        message_query = (
            select(MessageRecord)
            .where(col(MessageRecord.conversation_id).in_([r.id for r in records]))
            .order_by(col(MessageRecord.conversation_id), col(MessageRecord.position))
        )
        for message in session.exec(message_query):
            messages.setdefault(message.conversation_id, []).append(message)
        for record in records:
            assert record.id is not None
            yield record, to_model(record, messages.get(record.id, []))
        last_id = records[-1].id or last_id
        if remaining is not None:
            remaining -= len(records)
