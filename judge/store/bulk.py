"""Multi-row INSERTs that stay cheap at thousands of rows a second, in the session's transaction.

SQLAlchemy's ``insertmanyvalues`` with RETURNING sends one statement per row on SQLite, and on
PostgreSQL a statement whose text (and so psycopg's parsing of it) changes with the row count; both
cost ~0.1 ms a row, which was a third of a run's CPU. Here:
- PostgreSQL: one ``INSERT ... SELECT * FROM unnest(arrays)`` per call, the same text every time,
  with RETURNING when asked;
- SQLite: ``executemany`` (a loop in C). The ids, when asked for, are those after the table's largest
  id when the rows took exactly those (the usual case: inside our write transaction nobody else
  inserts, and SQLite gives a new row the largest id plus one), else read back through a unique key.
Values go through the columns' own bind processors, so what is stored is what the ORM would store.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import JSON, Table
from sqlmodel import Session

_PG_CHUNK = 5_000
_SQLITE_LOOKUP = 400
_SQLITE_ROWS = 200
_SQLITE_PARAMETERS = 999
"""The least limit on bound parameters of any SQLite build (before 3.32)."""


Columns = dict[str, list[Any]]
"""Column name -> its values, one per row (every list as long)."""


def insert_rows(session: Session, table: Table, columns: Columns) -> None:
    """Insert the rows given column by column."""
    size = _size(columns)
    if not size:
        return
    if session.get_bind().dialect.name == "postgresql":
        for start in range(0, size, _PG_CHUNK):
            _unnest(session, table, _slice(columns, start, start + _PG_CHUNK), ())
    else:
        _executemany(session, table, columns)


def insert_returning_ids(
    session: Session, table: Table, columns: Columns, key: tuple[str, str, str]
) -> list[int]:
    """Insert the rows and return their ids in the same order. ``key`` names three columns unique
    together: the first shared by every row (a run id), the second indexed after it (so the ids can be
    read back by it on SQLite), the third telling apart the rows that share the second."""
    size = _size(columns)
    if not size:
        return []
    found: dict[tuple[Any, ...], int] = {}
    if session.get_bind().dialect.name == "postgresql":
        for start in range(0, size, _PG_CHUNK):
            part = _slice(columns, start, start + _PG_CHUNK)
            for row in _unnest(session, table, part, ("id", *key)):
                found[tuple(row[1:])] = int(row[0])
        return _in_order(found, columns, key)
    quote = session.get_bind().dialect.identifier_preparer.quote
    cursor = _cursor(session)
    try:
        before = cursor.execute(f"SELECT max(id) FROM {quote(table.name)}").fetchone()[0] or 0
        _executemany(session, table, columns)
        last = cursor.execute("SELECT last_insert_rowid()").fetchone()[0]
        if last - before == size:  # the usual case: new rows take the ids after the largest one
            return list(range(before + 1, last + 1))
        scope, second, third = key
        owner = columns[scope][0]
        values = sorted(set(columns[second]))
        for start in range(0, len(values), _SQLITE_LOOKUP):
            chunk = values[start : start + _SQLITE_LOOKUP]
            sql = (
                f"SELECT id, {quote(second)}, {quote(third)} FROM {quote(table.name)}"
                f" WHERE {quote(scope)} = ? AND {quote(second)} IN ({','.join('?' * len(chunk))})"
            )
            for row_id, second_value, third_value in cursor.execute(sql, (owner, *chunk)):
                found[(owner, second_value, third_value)] = int(row_id)
    finally:
        cursor.close()
    return _in_order(found, columns, key)


def _in_order(found: dict[tuple[Any, ...], int], columns: Columns, key: tuple[str, str, str]) -> list[int]:
    """The ids ``found`` by key, in the order of the rows."""
    return [found[k] for k in zip(*(columns[name] for name in key), strict=True)]


def _size(columns: Columns) -> int:
    return len(next(iter(columns.values()))) if columns else 0


def _slice(columns: Columns, start: int, stop: int) -> Columns:
    return {name: values[start:stop] for name, values in columns.items()}


def _cursor(session: Session) -> Any:
    """A DB-API cursor on the session's connection, inside its transaction."""
    return session.connection().connection.driver_connection.cursor()  # type: ignore[union-attr]


def _processed(session: Session, table: Table, columns: Columns) -> list[list[Any]]:
    """Each column's values as the driver takes them (the types' bind processors). A column holding
    one value throughout (a run id, a timestamp) is processed once."""
    dialect = session.get_bind().dialect
    out: list[list[Any]] = []
    for name, values in columns.items():
        processor = table.c[name].type.bind_processor(dialect)
        if processor is None:
            out.append(values)
        elif values and all(v is values[0] for v in values):
            out.append([processor(values[0])] * len(values))
        else:
            out.append([processor(v) for v in values])
    return out


def _executemany(session: Session, table: Table, columns: Columns) -> None:
    """SQLite: INSERTs of ``_SQLITE_ROWS`` rows each, run by the driver's C loop. Many rows a statement,
    not one: the driver lets go of the GIL at every statement, and taking it back from a busy event loop
    (the runner's) can wait a thread switch interval each time."""
    rows = list(zip(*_processed(session, table, columns), strict=True))
    quote = session.get_bind().dialect.identifier_preparer.quote
    head = f"INSERT INTO {quote(table.name)} ({', '.join(quote(n) for n in columns)}) VALUES "
    one = f"({', '.join('?' * len(columns))})"
    per = max(1, min(_SQLITE_ROWS, _SQLITE_PARAMETERS // len(columns)))
    whole = len(rows) - len(rows) % per
    cursor = _cursor(session)
    try:
        if whole:
            sql = head + ", ".join([one] * per)
            groups = (tuple(v for row in rows[i : i + per] for v in row) for i in range(0, whole, per))
            cursor.executemany(sql, groups)
        if whole < len(rows):
            rest = rows[whole:]
            cursor.execute(head + ", ".join([one] * len(rest)), tuple(v for row in rest for v in row))
    finally:
        cursor.close()


def _unnest(
    session: Session, table: Table, columns: Columns, returning: tuple[str, ...]
) -> list[tuple[Any, ...]]:
    """PostgreSQL: every column as one array parameter (sent in binary), unnested into rows by the
    server."""
    dialect = session.get_bind().dialect
    arrays: list[list[Any]] = []
    casts: list[str] = []
    for name, values in columns.items():
        column = table.c[name]
        if isinstance(column.type, JSON):
            arrays.append([None if v is None else json.dumps(v) for v in values])
            casts.append("%s::text[]::json[]")
            continue
        processor = column.type.bind_processor(dialect)
        arrays.append([processor(v) for v in values] if processor else values)
        casts.append(f"%s::{column.type.compile(dialect)}[]")
    quote = dialect.identifier_preparer.quote
    names = ", ".join(quote(name) for name in columns)
    sql = f"INSERT INTO {quote(table.name)} ({names}) SELECT * FROM unnest({', '.join(casts)})"
    if returning:
        sql += f" RETURNING {', '.join(quote(name) for name in returning)}"
    cursor = _cursor(session)
    try:
        cursor.execute(sql, arrays, binary=True)
        return list(cursor.fetchall()) if returning else []
    finally:
        cursor.close()
