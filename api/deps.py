"""Dependencies as ``Annotated`` aliases: settings, a database session, the caller's project."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session

from api.settings import Settings
from judge.analytics import Snapshot
from judge.background import RunManager
from judge.errors import AuthenticationError, InputError
from judge.projects import authenticate
from judge.scope import Scope
from judge.store.db import engine
from judge.store.tables import Project

bearer = HTTPBearer(auto_error=False, description="The project's API key: `Authorization: Bearer <key>`.")


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_session(settings: Annotated[Settings, Depends(get_settings)]) -> Iterator[Session]:
    with Session(engine(settings.database_url), expire_on_commit=False) as session:
        yield session


def get_runs(request: Request) -> RunManager:
    manager: RunManager = request.app.state.runs
    return manager


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
RunsDep = Annotated[RunManager, Depends(get_runs)]


def get_project(
    session: SessionDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Project:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise AuthenticationError("missing API key: send `Authorization: Bearer <key>`")
    return authenticate(session, credentials.credentials)


ProjectDep = Annotated[Project, Depends(get_project)]


def parse_metadata(pairs: list[str]) -> dict[str, str]:
    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"metadata filter {pair!r}: expected KEY=VALUE")
        parsed[key] = value
    return parsed


def get_snapshot(
    session: SessionDep,
    project: ProjectDep,
    start: datetime | None = None,
    end: datetime | None = None,
    metadata: Annotated[list[str], Query(description="KEY=VALUE, all must match.")] = [],  # noqa: B006
    run_id: int | None = None,
    rubric: str | None = None,
    rubric_version: Annotated[int | None, Query(ge=1)] = None,
    grader: Annotated[str | None, Query(description="Grader id or provider:model.")] = None,
) -> Snapshot:
    """What a listing or an aggregate reads: the caller's project, its runs and the common filters."""
    scope = Scope(
        project_id=project.id or 0,
        run_id=run_id,
        rubric=rubric,
        rubric_version=rubric_version,
        grader=grader,
        start=start,
        end=end,
        metadata=parse_metadata(metadata),
    )
    return Snapshot(session, scope)


SnapshotDep = Annotated[Snapshot, Depends(get_snapshot)]
