"""Schemathesis against the app's own OpenAPI schema: no generated request may produce a 5xx."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import hypothesis
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck
from sqlmodel import Session

from api.app import create_app
from api.settings import Settings
from judge.projects import create_project
from judge.resources import SAMPLE_CONVERSATIONS
from judge.store.db import engine

_FOLDER = tempfile.TemporaryDirectory(prefix="judge-fuzz-")  # removed when the test process ends
SETTINGS = Settings(
    database_url=f"sqlite:///{Path(_FOLDER.name) / 'fuzz.db'}",
    cache_dir=Path(_FOLDER.name) / "cache",
    max_sync_conversations=3,
    max_conversations_per_request=50,
)
APP = create_app(SETTINGS)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module")
def headers() -> dict[str, str]:
    """A project with some judged data, so reads and filters have something to chew on."""
    with Session(engine(SETTINGS.database_url)) as session:
        _, key = create_project(session, "fuzz")
    auth = {"Authorization": f"Bearer {key}"}
    sample = [json.loads(line) for line in SAMPLE_CONVERSATIONS.open()][:20]
    with TestClient(APP) as client:
        client.post("/v1/conversations", json={"conversations": sample}, headers=auth)
        client.post("/v1/judge", json={"conversations": sample[:3]}, headers=auth)
    return auth


@schema.parametrize()
@hypothesis.settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_no_server_errors(case: schemathesis.Case, headers: dict[str, str]):
    response = case.call(headers=headers)
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text}"
    )
    if response.status_code >= 400:
        assert response.headers["content-type"] == ["application/problem+json"], response.text
