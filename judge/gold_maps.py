"""Label maps: how a gold set's own label names become a rubric's labels, and what counts as the truth.

A map is YAML, one entry per rubric dimension::

    rubric: travel                # the rubric it was written for
    dimensions:
      topic:                      # a dimension of that rubric
        from: domains             # the gold set's field
        labels: {restaurant: restaurant, hotel: hotel, hospital: ~}
      failure:
        from: failure_present
        labels: {"true": failed, "false": none}
        collapse: {none: none, "*": failed}   # score predictions as failed/none

A gold label missing from ``labels`` (or mapped to ``~``) is never guessed: the item is left out of that
dimension and counted under that label. ``collapse`` turns a rubric's labels into coarser classes (``*``
is every label not named) for both sides. Without a map, a gold field named like a rubric dimension is
read as that dimension's labels as they are.

A single-label dimension may have several acceptable gold labels (a MultiWOZ dialogue books a hotel and a
taxi). A prediction then scores against the gold label it names when it names one of them, else against
the first (the dialogue's first domain): correct exactly when it is one of them, and a wrong answer is
counted as a confusion with the main gold label.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from judge.errors import InputError
from judge.resources import read_yaml
from judge.rubric import Dimension, Rubric

WILDCARD = "*"
GoldValue = str | list[str] | None


class DimensionMap(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    source: str = Field(alias="from", description="The gold set's field holding this dimension's labels.")
    labels: dict[str, str | None] | None = Field(
        default=None, description="Gold label -> rubric label (or collapse class); ~ excludes the item."
    )
    collapse: dict[str, str] | None = Field(
        default=None, description="Rubric label -> class for scoring; '*' stands for every other label."
    )


class LabelMap(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rubric: str | None = Field(default=None, description="The rubric these labels belong to.")
    description: str = ""
    dimensions: dict[str, DimensionMap] = Field(min_length=1)


def _text_keys(value: Any) -> Any:
    """YAML reads ``true:`` as a boolean; gold labels are text, so keys become ``"true"``/``"false"``."""
    if isinstance(value, dict):
        return {_text(k): _text_keys(v) for k, v in value.items()}
    return value


def _text(key: Any) -> Any:
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key) if isinstance(key, int | float) else key


def parse_label_map(raw: Any, source: str) -> LabelMap:
    try:
        return LabelMap.model_validate(_text_keys(raw))
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'top level'}: {e['msg']}" for e in error.errors()
        )
        raise InputError(f"label map {source}: {problems}") from None


def load_label_map(path: Path) -> LabelMap:
    return parse_label_map(read_yaml(path, InputError, f"label map {path}"), str(path))


def identity_map(rubric: Rubric, fields: Iterable[str]) -> LabelMap | None:
    """Without a map: every gold field named like a rubric dimension, read as it is."""
    present = [name for name in rubric.dimensions if name in set(fields)]
    if not present:
        return None
    return LabelMap(rubric=rubric.name, dimensions={n: DimensionMap(source=n) for n in present})


def targets(dimension: Dimension, entry: DimensionMap) -> list[str]:
    """The labels scores are given in: the collapse classes, else the rubric's labels."""
    if entry.collapse is None:
        return dimension.label_ids
    return list(dict.fromkeys(entry.collapse.values()))


def check_map(label_map: LabelMap, rubric: Rubric, who: str) -> None:
    """Fail early, naming the dimension and label, when the map does not fit ``rubric``."""
    for name, entry in label_map.dimensions.items():
        if name not in rubric.dimensions:
            raise InputError(
                f"label map: dimension {name!r} is not in rubric {rubric.name!r} ({who}); "
                f"valid choices: {', '.join(rubric.dimensions)}"
            )
        dimension = rubric.dimensions[name]
        if entry.collapse is not None:
            if dimension.kind != "single":
                raise InputError(f"label map: dimension {name!r} is multi-label; collapse needs a single one")
            unknown = sorted(set(entry.collapse) - {WILDCARD, *dimension.label_ids})
            if unknown:
                raise InputError(
                    f"label map: dimension {name!r}, collapse names unknown labels {', '.join(unknown)} "
                    f"(rubric {rubric.name!r}, {who}); valid choices: {', '.join(dimension.label_ids)}"
                )
            uncovered = [i for i in dimension.label_ids if i not in entry.collapse]
            if uncovered and WILDCARD not in entry.collapse:
                raise InputError(
                    f"label map: dimension {name!r}, collapse leaves {', '.join(uncovered)} without a class; "
                    f"add them or '*'"
                )
        valid = targets(dimension, entry)
        for gold, target in (entry.labels or {}).items():
            if target is not None and target not in valid:
                raise InputError(
                    f"label map: dimension {name!r}, gold label {gold!r} maps to {target!r}, which is not a "
                    f"label of rubric {rubric.name!r} ({who}); valid choices: {', '.join(valid)}"
                )


@dataclass(frozen=True)
class Truth:
    """The gold answer for one item and dimension, in the scoring labels."""

    labels: tuple[str, ...]
    any_of: bool = False
    """Single-label dimension with several acceptable answers (see the module docstring)."""

    def resolve(self, predicted: str) -> str:
        """The gold label a single-label prediction is scored against."""
        return predicted if predicted in self.labels else self.labels[0]


@dataclass
class TruthColumn:
    """Gold answers of one rubric dimension, with what the map left out and why."""

    dimension: str
    kind: str
    source: str
    labels: list[str]
    collapse: dict[str, str] | None
    truths: dict[str, Truth] = field(default_factory=dict)
    unlabelled: int = 0
    excluded: Counter[str] = field(default_factory=Counter)

    def scoring_label(self, label: str) -> str:
        """A rubric label as scored: its collapse class when the map collapses this dimension."""
        if self.collapse is None:
            return label
        return self.collapse.get(label, self.collapse.get(WILDCARD, label))


def truth_columns(
    items: Iterable[tuple[str, Mapping[str, GoldValue]]], label_map: LabelMap, rubric: Rubric
) -> dict[str, TruthColumn]:
    """Translate every item's gold labels through the map into the rubric's labels, per dimension."""
    columns = {
        name: TruthColumn(
            dimension=name,
            kind=rubric.dimensions[name].kind,
            source=entry.source,
            labels=targets(rubric.dimensions[name], entry),
            collapse=dict(entry.collapse) if entry.collapse else None,
        )
        for name, entry in label_map.dimensions.items()
    }
    for item_id, labels in items:
        for name, entry in label_map.dimensions.items():
            _add(columns[name], entry, item_id, labels.get(entry.source))
    return columns


def _add(column: TruthColumn, entry: DimensionMap, item_id: str, raw: GoldValue) -> None:
    if raw is None:
        column.unlabelled += 1
        return
    values = [raw] if isinstance(raw, str) else list(raw)
    if column.kind == "single" and not values:
        column.excluded["(no label)"] += 1
        return
    mapped: list[str] = []
    for value in values:
        target = entry.labels.get(value) if entry.labels is not None else value
        if target is None or target not in column.labels:
            column.excluded[value] += 1
            return
        mapped.append(target)
    unique = tuple(dict.fromkeys(mapped))
    column.truths[item_id] = Truth(unique, any_of=column.kind == "single" and len(unique) > 1)
