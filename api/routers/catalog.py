"""Rubrics and graders known to the service."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from api.deps import ProjectDep, SessionDep
from judge.analytics import GraderUsage, grader_usage
from judge.errors import JudgeError, NotFoundError
from judge.rubric import available_rubrics, json_schema, load_rubric

router = APIRouter(tags=["catalog"])


class DimensionOut(BaseModel):
    name: str
    analytic: str
    kind: str
    question: str
    labels: list[str]


class RubricOut(BaseModel):
    name: str
    version: int
    hash: str
    description: str
    dimensions: list[DimensionOut]


class RubricDetail(RubricOut):
    rubric: dict[str, Any]
    json_schema: dict[str, Any]


def _rubric_out(name: str) -> RubricOut:
    rubric = load_rubric(name)
    return RubricOut(
        name=rubric.name,
        version=rubric.version,
        hash=rubric.content_hash(),
        description=rubric.description,
        dimensions=[
            DimensionOut(
                name=n, analytic=d.analytic.value, kind=d.kind, question=d.question, labels=d.label_ids
            )
            for n, d in rubric.dimensions.items()
        ],
    )


@router.get("/v1/rubrics", summary="Rubrics with their dimensions and labels")
def rubrics(_project: ProjectDep) -> list[RubricOut]:
    out = []
    for name in available_rubrics():
        try:
            out.append(_rubric_out(name))
        except JudgeError:
            continue  # an invalid rubric file is reported by `judge rubric validate`, not listed
    return out


@router.get(
    "/v1/rubrics/{name}", summary="One rubric, its full definition and the JSON Schema of rubric files"
)
def rubric(name: str, _project: ProjectDep) -> RubricDetail:
    if name not in available_rubrics():
        raise NotFoundError("rubric", name, available_rubrics())
    summary = _rubric_out(name)
    return RubricDetail(
        **summary.model_dump(), rubric=load_rubric(name).model_dump(mode="json"), json_schema=json_schema()
    )


@router.get("/v1/graders", summary="Grader fingerprints used by this project, with their usage")
def graders(session: SessionDep, project: ProjectDep) -> list[GraderUsage]:
    return grader_usage(session, project.id or 0)
