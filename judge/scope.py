"""Which judgements an aggregate or a listing reads: a project, runs (one, or those of a grader and
rubric), a time range and metadata filters. For each conversation x dimension only the latest judgement
among the selected runs counts, so re-running a grader never double-counts a conversation."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, Select, and_, func, or_
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from judge.errors import NotFoundError
from judge.store.tables import ConversationRecord, Grader, Judgement, RubricVersion, Run

Bucket = Literal["day", "week", "month"]


class Scope(BaseModel):
    project_id: int
    run_id: int | None = None
    rubric: str | None = None
    rubric_version: int | None = None
    grader: str | None = Field(
        default=None, description="Grader id (fingerprint) or its provider:model label."
    )
    start: datetime | None = None
    end: datetime | None = None
    metadata: dict[str, str] = Field(default_factory=dict)


def run_ids(session: Session, scope: Scope) -> list[int]:
    """The runs a scope reads. Without rubric or grader filters: those of the latest run's rubric name
    and grader, so one grader's labels are never mixed with another's by default."""
    query = select(Run.id).where(Run.project_id == scope.project_id)
    if scope.run_id is not None:
        found = session.exec(query.where(Run.id == scope.run_id)).first()
        if found is None:
            raise NotFoundError("run", str(scope.run_id))
        return [found]
    query = query.join(RubricVersion, col(RubricVersion.id) == Run.rubric_version_id).join(
        Grader, col(Grader.id) == Run.grader_id
    )
    rubric, grader = scope.rubric, scope.grader
    if rubric is None or grader is None:
        latest = session.exec(
            select(RubricVersion.name, Run.grader_id)
            .join(RubricVersion, col(RubricVersion.id) == Run.rubric_version_id)
            .where(Run.project_id == scope.project_id)
            .order_by(col(Run.id).desc())
        ).first()
        if latest is None:
            return []
        rubric = rubric or latest[0]
        grader = grader or latest[1]
    query = query.where(RubricVersion.name == rubric)
    if scope.rubric_version is not None:
        query = query.where(RubricVersion.version == scope.rubric_version)
    provider, _, model = grader.partition(":")
    query = query.where(
        or_(col(Grader.id) == grader, and_(col(Grader.provider) == provider, col(Grader.model) == model))
    )
    return [i for i in session.exec(query) if i is not None]


def conversation_filters(scope: Scope) -> list[ColumnElement[bool]]:
    """Conditions on ``ConversationRecord``: latest revision, project, time range, metadata."""
    conditions: list[ColumnElement[bool]] = [
        col(ConversationRecord.project_id) == scope.project_id,
        col(ConversationRecord.is_latest).is_(True),
    ]
    if scope.start is not None:
        conditions.append(col(ConversationRecord.started_at) >= scope.start)
    if scope.end is not None:
        conditions.append(col(ConversationRecord.started_at) < scope.end)
    for key, value in scope.metadata.items():
        conditions.append(metadata_value(key) == value)
    return conditions


def metadata_value(key: str) -> Any:
    return col(ConversationRecord.meta)[key].as_string()


def is_latest(table: Any, runs: list[int]) -> ColumnElement[bool]:
    """Rows of ``table`` (Judgement or JudgementLabel) from the latest run among ``runs`` that judged
    their conversation x dimension: an anti-join on the (conversation, dimension, run) index, so each
    row costs one index probe instead of a join against a grouped subquery."""
    in_runs = col(table.run_id).in_(runs)
    if len(runs) <= 1:
        return in_runs
    later = aliased(Judgement)
    newer = (
        select(later.id)
        .where(
            later.conversation_id == table.conversation_id,
            later.dimension == table.dimension,
            later.run_id > table.run_id,
            col(later.run_id).in_(runs),
        )
        .exists()
    )
    return and_(in_runs, ~newer)


def bucket_expression(session: Session, bucket: Bucket) -> Any:
    """The start date (YYYY-MM-DD) of the day, week (Monday) or month of a conversation's start."""
    started = col(ConversationRecord.started_at)
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(func.date_trunc(bucket, started), "YYYY-MM-DD")
    sqlite = {
        "day": func.date(started),
        "week": func.date(started, "weekday 0", "-6 days"),
        "month": func.strftime("%Y-%m-01", started),
    }
    return sqlite[bucket]


def scoped(query: Select[Any], scope: Scope) -> Select[Any]:
    return query.where(*conversation_filters(scope))
