"""What a grader costs per 1,000 conversations, from the usage stored with its runs and provider calls."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func
from sqlalchemy import select as sql_select
from sqlmodel import Session, col, select

from judge.compare_models import UsagePer1k
from judge.runner import RunSummary
from judge.store.tables import Judgement, ProviderCall, Run


def stored_usage(
    session: Session, project_id: int, grader_id: str, rubric_version_id: int, now: RunSummary
) -> UsagePer1k:
    """Usage per 1,000 conversations of a grader x rubric version, from every run of it in the project.

    The basis is the conversations it judged fresh (cache hits cost nothing and are not counted twice).
    Latency is the provider calls' summed latency; for an in-process grader without calls, the wall time
    of the runs that judged fresh."""
    runs = [
        i
        for i in session.exec(
            select(Run.id).where(
                Run.project_id == project_id,
                Run.grader_id == grader_id,
                Run.rubric_version_id == rubric_version_id,
            )
        )
        if i is not None
    ]
    basis = int(
        session.exec(
            select(func.count(func.distinct(Judgement.conversation_id))).where(
                col(Judgement.run_id).in_(runs), col(Judgement.cache_hit).is_(False)
            )
        ).one()
    )
    totals = session.execute(
        sql_select(
            func.coalesce(func.sum(col(ProviderCall.calls)), 0),
            func.coalesce(func.sum(col(ProviderCall.prompt_tokens)), 0),
            func.coalesce(func.sum(col(ProviderCall.completion_tokens)), 0),
            func.coalesce(func.sum(col(ProviderCall.cost_usd)), 0.0),
            func.coalesce(func.sum(col(ProviderCall.latency_s)), 0.0),
        ).where(col(ProviderCall.run_id).in_(runs))
    ).one()
    calls, prompt, completion, cost, latency = (
        int(totals[0]),
        int(totals[1]),
        int(totals[2]),
        float(totals[3]),
        float(totals[4]),
    )
    source = "provider calls"
    if calls == 0:
        latency, source = _fresh_wall_time(session, runs), "run wall time"

    def per_1k(value: float) -> float | None:
        return round(value / basis * 1000, 6) if basis else None

    return UsagePer1k(
        basis=basis,
        calls=calls,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost_usd=round(cost, 6),
        latency_s=round(latency, 3),
        latency_source=source if basis else "none: every verdict came from the cache",
        per_1k={
            "calls": per_1k(calls),
            "prompt_tokens": per_1k(prompt),
            "completion_tokens": per_1k(completion),
            "cost_usd": per_1k(cost),
            "latency_s": per_1k(latency),
        },
        calls_this_comparison=now.calls,
        cached_this_comparison=now.cache_hits,
        judgements_this_comparison=now.judgements,
    )


def _fresh_wall_time(session: Session, runs: list[int]) -> float:
    fresh = session.exec(
        select(Judgement.run_id)
        .where(col(Judgement.run_id).in_(runs), col(Judgement.cache_hit).is_(False))
        .distinct()
    ).all()
    total = 0.0
    for run in session.exec(select(Run).where(col(Run.id).in_(list(fresh)))):
        if run.finished_at is not None:
            total += (_aware(run.finished_at) - _aware(run.started_at)).total_seconds()
    return total


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
