"""Multi-row INSERTs that stay cheap at thousands of rows a second, in the session's transaction.

SQLAlchemy's ``insertmanyvalues`` with RETURNING sends one statement per row on SQLite, and on
PostgreSQL a statement whose text (and so psycopg's parsing of it) changes with the row count; both
cost ~0.1 ms a row, which was a third of a run's CPU. Here:
- PostgreSQL: one ``INSERT ... SELECT * FROM unnest(arrays)`` per call, the same text every time,
  with RETURNING when asked;
- SQLite: ``executemany`` (a loop in C); the ids, when asked for, are read back through a unique key.
Values go through the columns' own bind processors, so what is stored is what the ORM would store.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import JSON, Table
from sqlmodel import Session

_PG_CHUNK = 5_000
_SQLITE_LOOKUP = 400


def insert_rows(session: Session, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` (dicts with the same keys)."""
    if not rows:
        return
    if session.get_bind().dialect.name == "postgresql":
        for start in range(0, len(rows), _PG_CHUNK):
            _unnest(session, table, rows[start : start + _PG_CHUNK], ())
    else:
        _executemany(session, table, rows)


def insert_returning_ids(
    session: Session, table: Table, rows: Sequence[dict[str, Any]], key: tuple[str, str, str]
) -> list[int]:
    """Insert ``rows`` and return their ids in the same order. ``key`` names three columns unique
    together: the first shared by every row (a run id), the second indexed after it (so the ids can be
    read back by it on SQLite), the third telling apart the rows that share the second."""
    if not rows:
        return []
    found: dict[tuple[Any, ...], int] = {}
    if session.get_bind().dialect.name == "postgresql":
        for start in range(0, len(rows), _PG_CHUNK):
            for row in _unnest(session, table, rows[start : start + _PG_CHUNK], ("id", *key)):
                found[tuple(row[1:])] = int(row[0])
        return [found[tuple(r[k] for k in key)] for r in rows]
    _executemany(session, table, rows)
    scope, second, third = key
    owner = rows[0][scope]
    quote = session.get_bind().dialect.identifier_preparer.quote
    cursor = _cursor(session)
    try:
        values = sorted({r[second] for r in rows})
        for start in range(0, len(values), _SQLITE_LOOKUP):
            part = values[start : start + _SQLITE_LOOKUP]
            sql = (
                f"SELECT id, {quote(second)}, {quote(third)} FROM {quote(table.name)}"
                f" WHERE {quote(scope)} = ? AND {quote(second)} IN ({','.join('?' * len(part))})"
            )
            for row_id, second_value, third_value in cursor.execute(sql, (owner, *part)):
                found[(owner, second_value, third_value)] = int(row_id)
    finally:
        cursor.close()
    return [found[tuple(r[k] for k in key)] for r in rows]


def _cursor(session: Session) -> Any:
    """A DB-API cursor on the session's connection, inside its transaction."""
    return session.connection().connection.driver_connection.cursor()  # type: ignore[union-attr]


def _processed(
    session: Session, table: Table, rows: Sequence[dict[str, Any]]
) -> tuple[list[str], list[list[Any]]]:
    """Column names and, per column, the values as the driver takes them (the types' bind processors)."""
    names = list(rows[0])
    dialect = session.get_bind().dialect
    columns: list[list[Any]] = []
    for name in names:
        values = [row[name] for row in rows]
        processor = table.c[name].type.bind_processor(dialect)
        columns.append([processor(v) for v in values] if processor else values)
    return names, columns


def _executemany(session: Session, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """SQLite: one prepared INSERT run over every row by the driver's C loop."""
    names, columns = _processed(session, table, rows)
    quote = session.get_bind().dialect.identifier_preparer.quote
    sql = (
        f"INSERT INTO {quote(table.name)} ({', '.join(quote(n) for n in names)})"
        f" VALUES ({', '.join('?' * len(names))})"
    )
    cursor = _cursor(session)
    try:
        cursor.executemany(sql, list(zip(*columns, strict=True)))
    finally:
        cursor.close()


def _unnest(
    session: Session, table: Table, rows: Sequence[dict[str, Any]], returning: tuple[str, ...]
) -> list[tuple[Any, ...]]:
    """PostgreSQL: every column as one array parameter (sent in binary), unnested into rows by the
    server."""
    names = list(rows[0])
    dialect = session.get_bind().dialect
    arrays: list[list[Any]] = []
    casts: list[str] = []
    for name in names:
        column = table.c[name]
        values = [row[name] for row in rows]
        if isinstance(column.type, JSON):
            arrays.append([None if v is None else json.dumps(v) for v in values])
            casts.append("%s::text[]::json[]")
            continue
        processor = column.type.bind_processor(dialect)
        arrays.append([processor(v) for v in values] if processor else values)
        casts.append(f"%s::{column.type.compile(dialect)}[]")
    quote = dialect.identifier_preparer.quote
    columns = ", ".join(quote(name) for name in names)
    sql = f"INSERT INTO {quote(table.name)} ({columns}) SELECT * FROM unnest({', '.join(casts)})"
    if returning:
        sql += f" RETURNING {', '.join(quote(name) for name in returning)}"
    cursor = _cursor(session)
    try:
        cursor.execute(sql, arrays, binary=True)
        return list(cursor.fetchall()) if returning else []
    finally:
        cursor.close()
