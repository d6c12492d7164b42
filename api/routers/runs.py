"""Start runs in the background, follow them, cancel and resume them; judge a few conversations now."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from fastapi import APIRouter, status
from pydantic import BaseModel, Field
from sqlmodel import col, select

from api.deps import ProjectDep, RunsDep, SessionDep, SettingsDep
from api.routers.conversations import ConversationsIn, submit
from judge.analytics import Snapshot
from judge.background import require_run
from judge.errors import TooLargeError
from judge.queries import ConversationDetail, conversation_detail
from judge.rubric import Rubric
from judge.runner import Runner, RunOptions
from judge.scope import Scope
from judge.settings import open_cache
from judge.store.judgements import rubric_at
from judge.store.tables import Run

router = APIRouter(tags=["runs"])


class RunCreate(BaseModel):
    rubric: str = "default"
    rubric_version: int | None = Field(
        default=None, ge=1, description="A stored version; default: the file's."
    )
    grader: str = Field(default="local", description="local, or a litellm model such as openai/gpt-4o-mini.")
    grader_options: dict[str, Any] = Field(default_factory=dict)
    dimensions: list[str] | None = None
    ids: list[str] | None = Field(default=None, description="Judge only these conversation ids.")
    limit: int | None = Field(default=None, ge=1)
    batch_size: int | None = Field(default=None, ge=1, le=200)
    concurrency: int = Field(default=4, ge=1, le=64)


class RunPublic(BaseModel):
    id: int
    status: str
    error: str | None
    grader_id: str
    dimensions: list[str]
    options: dict[str, Any]
    total: int
    conversations: int
    progress: float
    judged: int
    cache_hits: int
    unscored: int
    calls: int
    retries: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    started_at: datetime
    finished_at: datetime | None


def public(run: Run) -> RunPublic:
    data = run.model_dump()
    data["progress"] = round(run.conversations / run.total, 4) if run.total else 1.0
    return RunPublic.model_validate(data)


def _runner(session: Any, project_name: str, body: RunCreate, ids: list[str] | None = None) -> Runner:
    options = RunOptions(
        rubric=body.rubric,
        grader=body.grader,
        grader_options=body.grader_options,
        dimensions=body.dimensions,
        ids=ids if ids is not None else body.ids,
        limit=body.limit,
        batch_size=body.batch_size,
        concurrency=body.concurrency,
        project=project_name,
    )
    rubric: Rubric | None = (
        rubric_at(session, body.rubric, body.rubric_version) if body.rubric_version else None
    )
    return Runner(session, options, rubric=rubric)


@router.post("/v1/runs", status_code=status.HTTP_202_ACCEPTED, summary="Start a run in the background")
def start(body: RunCreate, session: SessionDep, project: ProjectDep, runs: RunsDep) -> RunPublic:
    run = _runner(session, project.name, body).start()
    runs.launch(run.id or 0)
    return public(run)


@router.get("/v1/runs", summary="Runs of the project, newest first")
def list_runs(session: SessionDep, project: ProjectDep, limit: int = 50) -> list[RunPublic]:
    query = (
        select(Run).where(Run.project_id == project.id).order_by(col(Run.id).desc()).limit(min(limit, 500))
    )
    return [public(r) for r in session.exec(query)]


@router.get("/v1/runs/{run_id}", summary="Status, progress, usage and cost of a run")
def get_run(run_id: int, session: SessionDep, project: ProjectDep) -> RunPublic:
    return public(require_run(session, project.id or 0, run_id))


@router.post("/v1/runs/{run_id}/cancel", status_code=status.HTTP_202_ACCEPTED, summary="Cancel a running run")
def cancel(run_id: int, session: SessionDep, project: ProjectDep, runs: RunsDep) -> RunPublic:
    run = require_run(session, project.id or 0, run_id)
    runs.cancel(session, run)
    session.refresh(run)
    return public(run)


@router.post("/v1/runs/{run_id}/resume", status_code=status.HTTP_202_ACCEPTED, summary="Resume a stopped run")
def resume(run_id: int, session: SessionDep, project: ProjectDep, runs: RunsDep) -> RunPublic:
    """Continue an interrupted, cancelled or failed run; what it already stored is not judged again."""
    run = require_run(session, project.id or 0, run_id)
    runs.resume(session, run)
    return public(run)


class JudgeRequestBody(ConversationsIn, RunCreate):
    pass


class JudgeResult(BaseModel):
    run: RunPublic
    conversations: list[ConversationDetail]


@router.post("/v1/judge", summary="Label a few conversations now and return the judgements")
def judge_now(
    body: JudgeRequestBody, session: SessionDep, project: ProjectDep, settings: SettingsDep
) -> JudgeResult:
    """Store the conversations and judge them synchronously (for integration tests and playgrounds)."""
    if len(body.conversations) > settings.max_sync_conversations:
        raise TooLargeError(
            f"{len(body.conversations)} conversations; /v1/judge takes at most "
            f"{settings.max_sync_conversations} (use /v1/runs for more)"
        )
    report = submit(body, session, project, settings)
    ids = [item.id for item in report.items if item.revision is not None]
    runner = _runner(session, project.name, body, ids=ids)
    runner.cache = open_cache(True, settings.cache_dir)
    run = runner.start()
    asyncio.run(runner.execute(run))
    snapshot = Snapshot(session, Scope(project_id=project.id or 0, run_id=run.id))
    return JudgeResult(run=public(run), conversations=[conversation_detail(snapshot, i) for i in ids])
