"""The five analytics and failure intelligence, aggregated in SQL over a scope."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from api.deps import SnapshotDep
from judge.analytics import (
    DimensionSummary,
    SeriesPoint,
    Snapshot,
    TopicFailures,
    breakdown,
    dimension_summaries,
    failure_intelligence,
    signal_counts,
)
from judge.errors import InputError
from judge.rubric import Analytic
from judge.scope import Bucket

router = APIRouter(prefix="/v1/analytics", tags=["analytics"])


class ScopeOut(BaseModel):
    runs: list[int]
    rubric: str | None
    rubric_version: int | None


class AnalyticsOut(BaseModel):
    scope: ScopeOut
    dimensions: list[DimensionSummary]
    series: list[SeriesPoint]


class FeedbackOut(AnalyticsOut):
    signals: dict[str, int]


class FailuresOut(AnalyticsOut):
    topics: list[TopicFailures]


GroupBy = Annotated[
    str | None,
    Query(pattern=r"^(language|metadata\.[A-Za-z0-9_.-]+)$", description="language or metadata.KEY"),
]


def _out(snap: Snapshot, analytic: Analytic, bucket: Bucket | None, group_by: str | None) -> AnalyticsOut:
    if bucket and group_by:
        raise InputError("use either bucket or group_by, not both")
    rubric = snap.rubric
    return AnalyticsOut(
        scope=ScopeOut(
            runs=snap.runs,
            rubric=rubric.name if rubric else None,
            rubric_version=rubric.version if rubric else None,
        ),
        dimensions=dimension_summaries(snap, analytic),
        series=breakdown(snap, analytic, bucket, group_by),
    )


@router.get("/topics", summary="Topic & intent")
def topics(snap: SnapshotDep, bucket: Bucket | None = None, group_by: GroupBy = None) -> AnalyticsOut:
    return _out(snap, Analytic.topic_intent, bucket, group_by)


@router.get("/sentiment", summary="Sentiment & emotion")
def sentiment(snap: SnapshotDep, bucket: Bucket | None = None, group_by: GroupBy = None) -> AnalyticsOut:
    return _out(snap, Analytic.sentiment_emotion, bucket, group_by)


@router.get("/risks", summary="Business risk")
def risks(snap: SnapshotDep, bucket: Bucket | None = None, group_by: GroupBy = None) -> AnalyticsOut:
    return _out(snap, Analytic.business_risk, bucket, group_by)


@router.get("/implicit-feedback", summary="Implicit feedback: grader labels beside deterministic signals")
def implicit_feedback(
    snap: SnapshotDep, bucket: Bucket | None = None, group_by: GroupBy = None
) -> FeedbackOut:
    out = _out(snap, Analytic.implicit_feedback, bucket, group_by)
    return FeedbackOut(**out.model_dump(), signals=signal_counts(snap))


@router.get("/failures", summary="Failure causes and failure intelligence by topic")
def failures(
    snap: SnapshotDep,
    bucket: Bucket | None = None,
    group_by: GroupBy = None,
    level: Annotated[int, Query(ge=0, le=5, description="Topic depth; 0 = the full label.")] = 0,
    examples: Annotated[int, Query(ge=0, le=20)] = 3,
) -> FailuresOut:
    out = _out(snap, Analytic.failure_cause, bucket, group_by)
    return FailuresOut(**out.model_dump(), topics=failure_intelligence(snap, level, examples))
