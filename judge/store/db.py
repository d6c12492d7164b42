"""Engine, sessions and migrations. SQLite file by default; PostgreSQL when ``DATABASE_URL`` says so.

The schema is created and upgraded by the Alembic migrations in ``judge/migrations`` when a database is
opened, so a new release can change the schema without losing stored judgements.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, event
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, create_engine

from judge.resources import PACKAGE_DIR

DEFAULT_URL = "sqlite:///judge.db"


def database_url(url: str | None = None) -> str:
    """The explicit URL, else ``DATABASE_URL``, else ``judge.db`` in the working directory."""
    chosen = url or os.environ.get("DATABASE_URL") or DEFAULT_URL
    if chosen.startswith("postgresql://"):
        chosen = "postgresql+psycopg://" + chosen.removeprefix("postgresql://")
    return chosen


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


@cache
def engine(url: str | None = None) -> Engine:
    """One engine per URL for the process, migrated to the latest schema."""
    resolved = database_url(url)
    if resolved.startswith("sqlite"):
        created = create_engine(resolved, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(created, "connect", _sqlite_pragmas)
    else:
        created = create_engine(resolved, pool_pre_ping=True)
    migrate(created)
    return created


def migrate(target: Engine) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(PACKAGE_DIR / "migrations"))
    with target.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


@contextmanager
def session(url: str | None = None) -> Iterator[Session]:
    with Session(engine(url), expire_on_commit=False) as opened:
        yield opened


Row = TypeVar("Row")


def get_or_create(session: Session, find: Callable[[], Row | None], make: Callable[[], Row]) -> Row:
    """The row ``find`` gives, else the one ``make`` builds, inserted and committed. Two processes that
    start a run at the same moment both miss and both insert: the second's insert breaks the unique key,
    and it takes the first's row instead of failing."""
    found = find()
    if found is not None:
        return found
    row = make()
    session.add(row)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        found = find()
        if found is None:
            raise
        return found
    return row


def sqlite_path(url: str) -> Path | None:
    resolved = database_url(url)
    return Path(resolved.removeprefix("sqlite:///")) if resolved.startswith("sqlite:///") else None
