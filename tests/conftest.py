"""Shared fixtures: a guard against non-loopback network access, databases (SQLite and PostgreSQL), and
for the API tests a client of the app built from the module's ``settings`` with two projects' keys."""

from __future__ import annotations

import ipaddress
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

    from api.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get("JUDGE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
UNDER_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

_real_connect = socket.socket.connect
_real_getaddrinfo = socket.getaddrinfo


def _is_loopback(host: Any) -> bool:
    if host in (None, "localhost", "") or isinstance(host, bytes):
        return host != b"" if isinstance(host, bytes) else True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return str(host).endswith(".localhost")


class NetworkAccessError(RuntimeError):
    """A test tried to reach a host outside this machine."""


def _guarded_connect(self: socket.socket, address: Any) -> Any:
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
        raise NetworkAccessError(f"tests may only reach loopback addresses, not {address[0]}")
    return _real_connect(self, address)


def _guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    if not _is_loopback(host):
        raise NetworkAccessError(f"tests may only reach loopback addresses, not {host}")
    return _real_getaddrinfo(host, *args, **kwargs)


@pytest.fixture(autouse=True)
def no_external_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test that tries to reach a non-loopback address."""
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", _guarded_getaddrinfo)


@pytest.fixture(autouse=True)
def isolated_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own cache folder and default SQLite file."""
    monkeypatch.setenv("JUDGE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'judge.db'}")
    monkeypatch.delenv("JUDGE_RUBRICS_PATH", raising=False)


def _postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for one test module; skipped (failed under CI) without a server."""
    import psycopg

    admin_url = POSTGRES_URL
    try:
        admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as error:
        message = f"PostgreSQL not reachable at {admin_url}: {error}".strip()
        if UNDER_CI:
            pytest.fail(message)
        pytest.skip(message)
    name = f"judge_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = admin_url.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        from judge.store.db import engine

        engine.cache_clear()
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Run the test once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
    else:
        yield from _postgres_database()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    yield from _postgres_database()


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The app, started, over the module's ``settings``."""
    from fastapi.testclient import TestClient

    from api.app import create_app

    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _bearer(settings: Settings, project: str) -> dict[str, str]:
    from sqlmodel import Session

    from judge.projects import create_project
    from judge.store.db import engine

    with Session(engine(settings.database_url)) as session:
        _, key = create_project(session, project)
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def alice(settings: Settings) -> dict[str, str]:
    """Headers with the key of a new project, alice."""
    return _bearer(settings, "alice")


@pytest.fixture
def bob(settings: Settings) -> dict[str, str]:
    """Headers with the key of a new project, bob."""
    return _bearer(settings, "bob")
