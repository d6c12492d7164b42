"""Alembic environment: runs on the connection handed over by ``judge.store.db.migrate``."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import judge.store.gold_tables
import judge.store.tables  # noqa: F401  (registers the tables on SQLModel.metadata)

connection = context.config.attributes.get("connection")
if connection is None:
    from sqlalchemy import create_engine

    from judge.store.db import database_url

    connection = create_engine(database_url()).connect()

context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
