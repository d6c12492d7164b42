"""Rubrics are data: ``rubrics/<name>.yaml`` loaded into a strict pydantic model, with stable hashes.

Loading fails with a message that names the file, the dimension and the label at fault. The hash of one
dimension is part of the cache key, so editing one dimension re-judges only that dimension.
"""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from judge.errors import NotFoundError, RubricError
from judge.resources import read_yaml, search_path

LabelId = Annotated[str, Field(pattern=r"^[a-z0-9_]+(\.[a-z0-9_]+)*$", max_length=80)]
DimensionName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=40)]


class Analytic(StrEnum):
    """The five analytics a dimension can belong to (DESIGN.md)."""

    topic_intent = "topic_intent"
    sentiment_emotion = "sentiment_emotion"
    business_risk = "business_risk"
    implicit_feedback = "implicit_feedback"
    failure_cause = "failure_cause"


class Signal(StrEnum):
    """Deterministic implicit-feedback signals (see ``judge.signals``)."""

    rephrase_retry = "rephrase_retry"
    repeated_question = "repeated_question"
    abandonment = "abandonment"
    insult = "insult"
    gratitude = "gratitude"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Label(Strict):
    id: LabelId
    description: Annotated[str, Field(min_length=3)]
    examples: list[str] = Field(default_factory=list)
    signal: Signal | None = Field(
        default=None, description="A deterministic signal that implies this label for the offline grader."
    )
    negative: bool = Field(
        default=False, description="Counts as a failure (or negative feedback) in failure intelligence."
    )


class LocalHints(Strict):
    """How the embedded offline grader judges this dimension; LLM graders ignore it."""

    method: Literal["similarity", "sentiment"] = "similarity"
    scope: Literal["user", "assistant", "all"] = "user"
    position: Literal["start", "end"] = "start"
    threshold: Annotated[float, Field(ge=-1, le=1)] | None = None
    default: LabelId | None = None


class Dimension(Strict):
    analytic: Analytic
    kind: Literal["single", "multi"]
    question: Annotated[str, Field(min_length=3)]
    labels: Annotated[list[Label], Field(min_length=1)]
    suggest_new: bool = Field(default=False, description="Ask for a free-text label when none fits.")
    local: LocalHints = LocalHints()

    @model_validator(mode="after")
    def _check_labels(self) -> Dimension:
        ids = [label.id for label in self.labels]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate label ids: {', '.join(duplicates)}")
        if self.local.default is not None and self.local.default not in ids:
            raise ValueError(f"local.default {self.local.default!r} is not a label; valid: {', '.join(ids)}")
        if self.local.method == "sentiment" and not (
            {"negative", "neutral", "positive"} <= set(ids) or len(ids) == 3
        ):
            raise ValueError(
                "local.method 'sentiment' needs the labels negative, neutral and positive, "
                "or exactly three labels ordered from negative to positive"
            )
        return self

    @property
    def label_ids(self) -> list[str]:
        return [label.id for label in self.labels]

    def content_hash(self) -> str:
        return _hash(self.model_dump(mode="json"))


class Rubric(Strict):
    """A versioned set of dimensions to judge every conversation on."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=60)]
    version: Annotated[int, Field(ge=1)]
    description: str = ""
    dimensions: Annotated[dict[DimensionName, Dimension], Field(min_length=1)]

    def content_hash(self) -> str:
        return _hash(self.model_dump(mode="json"))

    def dimension(self, name: str) -> Dimension:
        try:
            return self.dimensions[name]
        except KeyError:
            raise NotFoundError("dimension", name, self.dimensions) from None

    def select(self, names: list[str] | None) -> list[str]:
        """The named dimensions (all when ``names`` is empty), checked to exist."""
        if not names:
            return list(self.dimensions)
        return [name for name in names if self.dimension(name)]


def _hash(data: Any) -> str:
    blob = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _where(raw: Any, loc: tuple[int | str, ...]) -> str:
    """Turn a pydantic error location into words: ``dimension 'risk', label 'fraud', field 'examples'``."""
    parts: list[str] = []
    rest = list(loc)
    if rest[:1] == ["dimensions"] and len(rest) > 1:
        name = rest[1]
        parts.append(f"dimension {name!r}")
        dimension = raw.get("dimensions", {}).get(name, {}) if isinstance(raw, dict) else {}
        rest = rest[2:]
        if rest[:1] == ["labels"] and len(rest) > 1 and isinstance(rest[1], int):
            labels = dimension.get("labels", []) if isinstance(dimension, dict) else []
            entry = labels[rest[1]] if rest[1] < len(labels) else {}
            label_id = entry.get("id") if isinstance(entry, dict) else None
            parts.append(f"label {label_id!r} (labels[{rest[1]}])" if label_id else f"labels[{rest[1]}]")
            rest = rest[2:]
    if rest:
        parts.append("field " + ".".join(str(p) for p in rest))
    return ", ".join(parts) or "top level"


def parse_rubric(raw: Any, source: str) -> Rubric:
    try:
        return Rubric.model_validate(raw)
    except ValidationError as error:
        problems = [f"{_where(raw, e['loc'])}: {e['msg']}" for e in error.errors()]
        raise RubricError(f"{source}: " + "; ".join(problems)) from None


def load_rubric_file(path: Path) -> Rubric:
    return parse_rubric(read_yaml(path, RubricError, str(path)), str(path))


def available_rubrics(extra: list[Path] | None = None) -> dict[str, Path]:
    """Rubric name -> file, earlier folders shadowing later ones."""
    found: dict[str, Path] = {}
    for folder in reversed(search_path("rubrics", extra)):
        for path in sorted(folder.glob("*.yaml")):
            found[path.stem] = path
    return found


def load_rubric(name_or_path: str, extra: list[Path] | None = None) -> Rubric:
    """Load a rubric by name (searched in the rubric folders) or by the path of a YAML file."""
    candidate = Path(name_or_path)
    if candidate.suffix in {".yaml", ".yml"} or candidate.is_file():
        return load_rubric_file(candidate)
    known = available_rubrics(extra)
    if name_or_path not in known:
        raise NotFoundError("rubric", name_or_path, known)
    return load_rubric_file(known[name_or_path])


def json_schema() -> dict[str, Any]:
    """JSON Schema of the rubric YAML, for editors (``rubrics/rubric.schema.json``)."""
    schema = Rubric.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "judge rubric"
    return schema
