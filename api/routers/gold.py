"""Gold sets and grader comparisons: import a gold set, compare graders on it in the background, read
the stored reports as JSON or as the self-contained HTML page."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request, status
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from api.deps import ProjectDep, SessionDep, SettingsDep
from judge import compare
from judge.compare_background import ComparisonManager
from judge.compare_models import CompareRequest, ComparisonReport
from judge.errors import ConflictError, InputError, TooLargeError
from judge.gold import (
    GoldLineError,
    GoldName,
    GoldSetPublic,
    import_gold_set,
    list_gold_sets,
    parse_gold,
    require_gold_set,
)
from judge.gold import public as gold_public
from judge.gold_maps import parse_label_map
from judge.store.gold_tables import Comparison, GoldSet


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    manager = _manager(app)
    manager.mark_interrupted()
    yield
    manager.wait(10.0)


router = APIRouter(tags=["gold"], lifespan=_lifespan)


def _manager(app: FastAPI) -> ComparisonManager:
    manager: ComparisonManager | None = getattr(app.state, "comparisons", None)
    if manager is None:
        settings = app.state.settings
        manager = ComparisonManager(settings.database_url, settings.cache_dir)
        app.state.comparisons = manager
    return manager


def get_comparisons(request: Request) -> ComparisonManager:
    return _manager(request.app)


ComparisonsDep = Annotated[ComparisonManager, Depends(get_comparisons)]


class GoldSetCreate(BaseModel):
    name: GoldName
    description: str = ""
    adapter: Literal["auto", "native", "uss", "dbdc3"] = Field(
        default="auto", description="How to read the items: our gold format, or the shared USS/DBDC3 shape."
    )
    items: list[dict[str, Any]] = Field(min_length=1, description="The gold file's lines, as JSON objects.")
    label_map: dict[str, Any] | None = Field(default=None, description="A label map (the YAML's content).")
    map_name: str | None = Field(default=None, max_length=200)
    replace: bool = Field(default=False, description="Overwrite a gold set of that name.")


class GoldSetImported(BaseModel):
    gold_set: GoldSetPublic
    rejected: list[GoldLineError]


class ComparisonPublic(BaseModel):
    id: int
    status: str
    error: str | None
    gold: str
    graders: list[str]
    gate_passed: bool | None
    created_at: datetime
    finished_at: datetime | None


class ComparisonDetail(ComparisonPublic):
    request: dict[str, Any]
    report: ComparisonReport | None


@router.post("/v1/gold-sets", status_code=status.HTTP_201_CREATED, summary="Import a gold set")
def create_gold_set(
    body: GoldSetCreate, session: SessionDep, project: ProjectDep, settings: SettingsDep
) -> GoldSetImported:
    """Store the conversations (in the gold set's own project) and their human labels; items that do
    not validate are reported by position and field, the valid ones still land."""
    if len(body.items) > settings.max_conversations_per_request:
        raise TooLargeError(
            f"{len(body.items)} gold items in one request; "
            f"the limit is {settings.max_conversations_per_request}"
        )
    label_map = parse_label_map(body.label_map, "label_map") if body.label_map else None
    items, rejected, adapter = parse_gold(enumerate(body.items), body.adapter)
    if not items:
        raise InputError(
            "no valid gold item: " + "; ".join(f"items.{p.line}: {p.message}" for p in rejected[:5])
        )
    gold = import_gold_set(
        session,
        project,
        body.name,
        items,
        adapter=adapter,
        label_map=label_map,
        map_name=body.map_name,
        description=body.description,
        replace=body.replace,
    )
    return GoldSetImported(gold_set=gold_public(session, gold), rejected=rejected)


@router.get("/v1/gold-sets", summary="The project's gold sets")
def gold_sets(session: SessionDep, project: ProjectDep) -> list[GoldSetPublic]:
    return list_gold_sets(session, project.id or 0)


@router.get("/v1/gold-sets/{name}", summary="One gold set")
def gold_set(name: str, session: SessionDep, project: ProjectDep) -> GoldSetPublic:
    return gold_public(session, require_gold_set(session, project.id or 0, name))


def _public(session: SessionDep, comparison: Comparison) -> ComparisonPublic:
    gold = session.get(GoldSet, comparison.gold_set_id)
    return ComparisonPublic(
        id=comparison.id or 0,
        status=comparison.status,
        error=comparison.error,
        gold=gold.name if gold else "",
        graders=comparison.graders,
        gate_passed=comparison.gate_passed,
        created_at=comparison.created_at,
        finished_at=comparison.finished_at,
    )


@router.post(
    "/v1/comparisons",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Compare graders on a gold set (background)",
)
def start_comparison(
    body: CompareRequest, session: SessionDep, project: ProjectDep, comparisons: ComparisonsDep
) -> ComparisonPublic:
    """Checks the request now (gold set, graders, rubrics, label map, gate), then runs each grader through
    the normal runner and computes the report in the background; poll ``GET /v1/comparisons/{id}``."""
    comparison = compare.start(session, project, body)
    comparisons.launch(comparison.id or 0)
    return _public(session, comparison)


@router.get("/v1/comparisons", summary="Past comparisons of the project, newest first")
def list_comparisons(
    session: SessionDep, project: ProjectDep, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> list[ComparisonPublic]:
    return [_public(session, c) for c in compare.list_comparisons(session, project.id or 0, limit)]


@router.get(
    "/v1/comparisons/{comparison_id}",
    summary="A comparison and its report (JSON, or HTML with format=html or Accept: text/html)",
    response_model=ComparisonDetail,
    responses={200: {"content": {"text/html": {}}}},
)
def get_comparison(
    comparison_id: int,
    request: Request,
    session: SessionDep,
    project: ProjectDep,
    format: Annotated[
        Literal["json", "html"] | None, Query(description="Default: from the Accept header.")
    ] = None,
) -> Any:
    found = compare.require_comparison(session, project.id or 0, comparison_id)
    wants_html = format == "html" or (format is None and "text/html" in request.headers.get("accept", ""))
    if wants_html:
        if found.html is None:
            raise ConflictError(f"comparison {comparison_id} is {found.status}; it has no report yet")
        return HTMLResponse(found.html)
    return ComparisonDetail(
        **_public(session, found).model_dump(),
        request=found.request,
        report=ComparisonReport.model_validate(found.report) if found.report else None,
    )
