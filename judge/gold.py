"""Gold sets: conversations with human labels, read from JSONL (through adapters) and stored.

One line of our gold format::

    {"id": "g-1", "source": "where it comes from", "messages": [...], "metadata": {"language": "en"},
     "labels": {"topic": "billing.refund", "emotion": ["frustrated"], "failure": null},
     "annotators": ["ann-1", "ann-2"], "raters": {"topic": 2}}

``labels`` uses the gold set's own field and label names (any of them null: not labelled); a label map
(``judge.gold_maps``) translates them into a rubric's. ``annotators`` and ``raters`` (per field, how many
people stand behind the label) are optional. Adapters read other shapes: ``uss`` and ``dbdc3`` read the
shared converted USS/MultiWOZ and DBDC3 files. The conversations are stored in a project of their own,
``gold:<name>``, so the normal runner judges them and they never mix with a team's production data.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlmodel import Session, col, delete, select

from judge.conversation import Conversation, Message, MetadataValue, describe_validation_error
from judge.errors import ConflictError, InputError, NotFoundError
from judge.gold_maps import GoldValue, LabelMap, check_map, parse_label_map
from judge.rubric import load_rubric
from judge.store.conversations import ensure_project, store_conversations
from judge.store.gold_tables import GoldItemRow, GoldSet
from judge.store.tables import ConversationRecord, Project, utcnow

GoldName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$", max_length=60)]
STORE_CHUNK = 500


class GoldItem(BaseModel):
    """One line of a gold set in our format (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    id: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:@/-]+$")]
    source: str | None = None
    messages: Annotated[list[Message], Field(min_length=1)]
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)
    labels: dict[str, GoldValue]
    annotators: list[str] | None = None
    raters: dict[str, int] | None = None

    def conversation(self) -> Conversation:
        metadata = dict(self.metadata)
        if self.source and "source" not in metadata:
            metadata["source"] = self.source
        return Conversation(id=self.id, messages=self.messages, metadata=metadata)


# -- adapters -------------------------------------------------------------------------------------------

Adapter = Callable[[dict[str, Any]], dict[str, Any]]
"""Turns one record of a foreign shape into a record of our shape (validated afterwards)."""


def _shared(
    record: dict[str, Any], fields: dict[str, tuple[str, str]], raters: dict[str, int | None]
) -> dict[str, Any]:
    """The shared ``../shared/gold`` shape: labels nested per analytic, provenance in ``labels.meta``."""
    nested = record.get("labels") or {}
    labels: dict[str, Any] = {}
    for name, (analytic, key) in fields.items():
        value = (nested.get(analytic) or {}).get(key)
        labels[name] = ("true" if value else "false") if isinstance(value, bool) else value
    meta = nested.get("meta") or {}
    return {
        "id": record.get("id"),
        "source": record.get("source"),
        "messages": record.get("messages"),
        "metadata": {"language": meta["language"]} if isinstance(meta.get("language"), str) else {},
        "labels": labels,
        "raters": {k: v for k, v in raters.items() if v is not None and labels.get(k) is not None} or None,
    }


def uss(record: dict[str, Any]) -> dict[str, Any]:
    """USS (MultiWOZ part): ``domains`` (several per dialogue) and ``satisfaction`` (3 to 7 raters)."""
    scores = ((record.get("labels") or {}).get("raw") or {}).get("overall_satisfaction_scores")
    return _shared(
        record,
        {"domains": ("topic_intent", "domains"), "satisfaction": ("implicit_feedback", "satisfaction")},
        {"satisfaction": len(scores) if isinstance(scores, list) else None},
    )


def dbdc3(record: dict[str, Any]) -> dict[str, Any]:
    """DBDC3 English: ``failure_present`` is ``"true"`` when raters saw a breakdown (30 per bot turn)."""
    meta = (record.get("labels") or {}).get("meta") or {}
    count = meta.get("n_annotators_per_system_turn")
    return _shared(
        record,
        {"failure_present": ("failure_cause", "failure_present")},
        {"failure_present": count if isinstance(count, int) else None},
    )


def native(record: dict[str, Any]) -> dict[str, Any]:
    return record


ADAPTERS: dict[str, Adapter] = {"native": native, "uss": uss, "dbdc3": dbdc3}


def detect_adapter(record: dict[str, Any]) -> str:
    """``uss`` or ``dbdc3`` for the shared files (told apart by their source), else ``native``."""
    labels = record.get("labels")
    if isinstance(labels, dict) and "turn_labels" in labels and "meta" in labels:
        source = str(record.get("source") or "")
        if "user-satisfaction-simulation" in source or labels.get("topic_intent") is not None:
            return "uss"
        if "dbdc" in source.lower() or labels.get("failure_cause") is not None:
            return "dbdc3"
    return "native"


class GoldLineError(BaseModel):
    line: int
    message: str


def read_gold(path: Path, adapter: str = "auto") -> tuple[list[GoldItem], list[GoldLineError], str]:
    """Parse a gold JSONL file: its valid items, its bad lines (by number and field), the adapter used."""
    try:
        handle = path.open(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    problems: list[GoldLineError] = []
    with handle:
        items, rejected, used = parse_gold(_records(handle, problems), adapter)
    return items, sorted([*problems, *rejected], key=lambda p: p.line), used


def parse_gold(
    records: Iterable[tuple[int, dict[str, Any]]], adapter: str = "auto"
) -> tuple[list[GoldItem], list[GoldLineError], str]:
    """Validate numbered records through an adapter (``auto``: detected from the first record)."""
    if adapter != "auto" and adapter not in ADAPTERS:
        raise NotFoundError("gold adapter", adapter, [*ADAPTERS, "auto"])
    items: list[GoldItem] = []
    problems: list[GoldLineError] = []
    chosen = adapter
    seen: set[str] = set()
    for number, record in records:
        if chosen == "auto":
            chosen = detect_adapter(record)
        try:
            item = GoldItem.model_validate(ADAPTERS[chosen](record))
            item.conversation()  # the same checks as a submitted conversation (a user message, ...)
        except ValidationError as error:
            problems.append(GoldLineError(line=number, message=describe_validation_error(error)))
            continue
        if item.id in seen:
            problems.append(GoldLineError(line=number, message=f"id: {item.id!r} appears twice"))
            continue
        seen.add(item.id)
        items.append(item)
    return items, problems, "native" if chosen == "auto" else chosen


def _records(handle: Any, problems: list[GoldLineError]) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            problems.append(GoldLineError(line=number, message=f"not valid JSON: {error.msg}"))
            continue
        if not isinstance(record, dict):
            problems.append(GoldLineError(line=number, message="expected a JSON object"))
            continue
        yield number, record


# -- storage --------------------------------------------------------------------------------------------


class GoldSetPublic(BaseModel):
    """A stored gold set: how many items, which fields are labelled, the map it carries."""

    name: str
    description: str
    adapter: str
    source_file: str | None
    items: int
    labelled: dict[str, int]
    label_map: dict[str, Any] | None
    map_name: str | None
    data_project: str
    created_at: datetime
    updated_at: datetime


def data_project_name(owner: str, name: str) -> str:
    """Where a gold set's conversations live: ``gold:<name>`` (``gold:<owner>:<name>`` for API projects)."""
    return f"gold:{name}" if owner == "default" else f"gold:{owner}:{name}"


def import_gold_set(
    session: Session,
    owner: Project,
    name: str,
    items: list[GoldItem],
    *,
    adapter: str = "native",
    label_map: LabelMap | None = None,
    map_name: str | None = None,
    source_file: str | None = None,
    description: str = "",
    replace: bool = False,
) -> GoldSet:
    """Store ``items`` as gold set ``name`` of ``owner`` (conversations in its own project)."""
    _check_name(name)
    if not items:
        raise InputError(f"gold set {name!r}: no valid item to import")
    if label_map is not None and label_map.rubric is not None:
        check_map(label_map, load_rubric(label_map.rubric), f"the map's rubric {label_map.rubric!r}")
    assert owner.id is not None
    found = session.exec(select(GoldSet).where(GoldSet.project_id == owner.id, GoldSet.name == name)).first()
    if found is not None and not replace:
        raise ConflictError(f"gold set {name!r} already exists; import with replace to overwrite it")
    data = ensure_project(session, data_project_name(owner.name, name))
    assert data.id is not None
    for start in range(0, len(items), STORE_CHUNK):
        store_conversations(session, data.id, [i.conversation() for i in items[start : start + STORE_CHUNK]])
    gold = found or GoldSet(project_id=owner.id, data_project_id=data.id, name=name, adapter=adapter)
    if found is not None:
        session.execute(delete(GoldItemRow).where(col(GoldItemRow.gold_set_id) == found.id))
    gold.adapter, gold.description, gold.source_file = adapter, description, source_file
    gold.label_map = (
        label_map.model_dump(mode="json", by_alias=True, exclude_none=True) if label_map else None
    )
    gold.map_name, gold.items, gold.updated_at = map_name, len(items), utcnow()
    gold.labelled = dict(Counter(k for i in items for k, v in i.labels.items() if v is not None))
    session.add(gold)
    session.flush()
    assert gold.id is not None
    records = _latest_records(session, data.id, [i.id for i in items])
    for item in items:
        session.add(
            GoldItemRow(
                gold_set_id=gold.id,
                external_id=item.id,
                conversation_id=records[item.id],
                source=item.source,
                labels=dict(item.labels),
                annotators=item.annotators,
                raters=item.raters,
            )
        )
    session.commit()
    return gold


def _check_name(name: str) -> None:
    class _Name(BaseModel):
        name: GoldName

    try:
        _Name(name=name)
    except ValidationError:
        raise InputError(
            f"gold set name {name!r}: use lower-case letters, digits, '.', '_' or '-' (at most 60)"
        ) from None


def _latest_records(session: Session, project_id: int, ids: list[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for start in range(0, len(ids), STORE_CHUNK):
        query = select(ConversationRecord.external_id, ConversationRecord.id).where(
            ConversationRecord.project_id == project_id,
            col(ConversationRecord.is_latest),
            col(ConversationRecord.external_id).in_(ids[start : start + STORE_CHUNK]),
        )
        found.update({external: record for external, record in session.exec(query) if record is not None})
    return found


def require_gold_set(session: Session, project_id: int, name: str) -> GoldSet:
    found = session.exec(
        select(GoldSet).where(GoldSet.project_id == project_id, GoldSet.name == name)
    ).first()
    if found is None:
        known = session.exec(select(GoldSet.name).where(GoldSet.project_id == project_id)).all()
        raise NotFoundError("gold set", name, known)
    return found


def list_gold_sets(session: Session, project_id: int) -> list[GoldSetPublic]:
    query = select(GoldSet).where(GoldSet.project_id == project_id).order_by(col(GoldSet.name))
    return [public(session, g) for g in session.exec(query)]


def public(session: Session, gold: GoldSet) -> GoldSetPublic:
    data = session.get(Project, gold.data_project_id)
    return GoldSetPublic(
        name=gold.name,
        description=gold.description,
        adapter=gold.adapter,
        source_file=gold.source_file,
        items=gold.items,
        labelled=gold.labelled,
        label_map=gold.label_map,
        map_name=gold.map_name,
        data_project=data.name if data else "",
        created_at=gold.created_at,
        updated_at=gold.updated_at,
    )


def gold_items(session: Session, gold: GoldSet) -> list[GoldItemRow]:
    query = select(GoldItemRow).where(GoldItemRow.gold_set_id == gold.id).order_by(col(GoldItemRow.id))
    return list(session.exec(query))


def stored_map(gold: GoldSet) -> LabelMap | None:
    return parse_label_map(gold.label_map, f"of gold set {gold.name!r}") if gold.label_map else None
