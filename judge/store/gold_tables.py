"""Tables of gold sets and grader comparisons.

A gold set belongs to a project (its owner) but keeps its conversations in a project of its own
(``gold:<name>``), so judging them never mixes with the owner's production analytics. Each item keeps
the human labels in the gold set's own vocabulary; a label map translates them at comparison time.
A comparison stores its whole report (JSON and HTML): reports are snapshots, re-read without recomputing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from judge.store.tables import utcnow


def _json(nullable: bool = False) -> Any:
    if nullable:
        return Field(default=None, sa_column=Column(JSON, nullable=True))
    return Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


def _when(nullable: bool = False) -> Any:
    column = Column(DateTime(timezone=True), nullable=nullable)
    return (
        Field(default=None, sa_column=column) if nullable else Field(default_factory=utcnow, sa_column=column)
    )


class GoldSet(SQLModel, table=True):
    __tablename__ = "gold_set"
    __table_args__ = (UniqueConstraint("project_id", "name"),)
    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    data_project_id: int = Field(foreign_key="project.id")
    name: str = Field(max_length=60)
    description: str = Field(default="", sa_column=Column(Text, nullable=False))
    adapter: str = Field(max_length=40)
    source_file: str | None = Field(default=None, max_length=500)
    label_map: dict[str, Any] | None = _json(nullable=True)
    map_name: str | None = Field(default=None, max_length=200)
    items: int = 0
    labelled: dict[str, int] = _json()
    created_at: datetime = _when()
    updated_at: datetime = _when()


class GoldItemRow(SQLModel, table=True):
    """One gold conversation: which stored revision it is and what the humans said about it."""

    __tablename__ = "gold_item"
    __table_args__ = (UniqueConstraint("gold_set_id", "external_id"),)
    id: int | None = Field(default=None, primary_key=True)
    gold_set_id: int = Field(foreign_key="gold_set.id", index=True)
    external_id: str = Field(max_length=200)
    conversation_id: int = Field(foreign_key="conversation.id")
    source: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    labels: dict[str, Any] = _json()
    annotators: list[str] | None = _json(nullable=True)
    raters: dict[str, int] | None = _json(nullable=True)


class Comparison(SQLModel, table=True):
    """Graders compared on a gold set: the request, its status, and the stored report."""

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    gold_set_id: int = Field(foreign_key="gold_set.id")
    status: str = Field(default="running", max_length=20, index=True)
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    request: dict[str, Any] = _json()
    graders: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    gate_passed: bool | None = None
    report: dict[str, Any] | None = _json(nullable=True)
    html: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = _when()
    finished_at: datetime | None = _when(nullable=True)
