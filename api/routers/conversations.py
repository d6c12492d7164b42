"""Submit conversations and read them back."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field, ValidationError

from api.deps import ProjectDep, SessionDep, SettingsDep, SnapshotDep
from judge.analytics import Snapshot
from judge.conversation import Conversation, describe_validation_error, parse_record
from judge.errors import InputError, TooLargeError
from judge.queries import (
    ConversationDetail,
    ConversationFilter,
    Page,
    conversation_detail,
    list_conversations,
)
from judge.scope import Scope
from judge.store.conversations import IngestItem, Outcome, store_conversations

router = APIRouter(prefix="/v1/conversations", tags=["conversations"])


class ConversationsIn(BaseModel):
    conversations: list[dict[str, Any]] = Field(
        description="Conversations in our shape or as OpenAI chat records ({'messages': [...]}).",
        min_length=1,
    )


class IngestReport(BaseModel):
    counts: dict[Outcome, int]
    items: list[IngestItem]


@router.post("", summary="Submit conversations")
def submit(
    body: ConversationsIn, session: SessionDep, project: ProjectDep, settings: SettingsDep
) -> IngestReport:
    """Validate each conversation, store the valid ones and report per item; re-submitting is a no-op."""
    if len(body.conversations) > settings.max_conversations_per_request:
        raise TooLargeError(
            f"{len(body.conversations)} conversations in one request; the limit is "
            f"{settings.max_conversations_per_request}"
        )
    results: list[IngestItem | None] = []
    valid: list[Conversation] = []
    for index, record in enumerate(body.conversations):
        try:
            valid.append(parse_record(record, fallback_id=f"item-{index}"))
            results.append(None)
        except ValidationError as error:
            fallback = record.get("id") if isinstance(record.get("id"), str) else f"item-{index}"
            detail = f"conversations.{index}." + describe_validation_error(error)
            results.append(IngestItem(id=str(fallback), outcome=Outcome.rejected, error=detail))
        except ValueError as error:
            results.append(IngestItem(id=f"item-{index}", outcome=Outcome.rejected, error=str(error)))
    stored = iter(store_conversations(session, project.id or 0, valid) if valid else [])
    items = [item if item is not None else next(stored) for item in results]
    counts = {outcome: sum(1 for i in items if i.outcome is outcome) for outcome in Outcome}
    if not valid:
        raise InputError("no valid conversation: " + "; ".join(i.error or "" for i in items[:5]))
    return IngestReport(counts=counts, items=items)


@router.get("", summary="List conversations")
def list_(
    snap: SnapshotDep,
    settings: SettingsDep,
    label: Annotated[list[str], Query(description="DIMENSION:LABEL, all must hold.")] = [],  # noqa: B006
    topic: str | None = None,
    risk: str | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Page:
    """Latest revisions matching every filter, oldest first; follow ``next_cursor`` for the next page."""
    filters = ConversationFilter(labels=label, topic=topic, risk=risk)
    return list_conversations(snap, filters, cursor, min(limit, settings.page_size_limit))


@router.get("/{conversation_id}", summary="One conversation with its signals and judgements")
def get(
    conversation_id: str,
    session: SessionDep,
    project: ProjectDep,
    run_id: int | None = None,
    grader: str | None = None,
    rubric: str | None = None,
) -> ConversationDetail:
    scope = Scope(project_id=project.id or 0, run_id=run_id, grader=grader, rubric=rubric)
    return conversation_detail(Snapshot(session, scope), conversation_id)
