"""Dependencies as ``Annotated`` aliases: settings, a database session, the caller's project."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session

from api.settings import Settings
from judge.background import RunManager
from judge.errors import AuthenticationError
from judge.projects import authenticate
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
