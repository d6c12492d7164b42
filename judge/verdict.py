"""What a grader says about one conversation, and the typed response model an LLM must fill in.

The response model is built from the rubric: labels become ``Literal`` types, so a new label in the YAML
is a new allowed value in the reply schema, and a label outside the rubric fails validation (and is
re-asked) instead of being stored. The batch model also checks that every conversation id in the batch
appears exactly once and that evidence points at real messages.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from judge.rubric import Dimension, Rubric

Reason = Annotated[str, Field(max_length=400)]


class LabelVerdict(BaseModel):
    """One label given to a conversation, with the indices of the messages that show it."""

    label: str
    evidence: list[int] = Field(default_factory=list)
    reason: str | None = None


class DimensionVerdict(BaseModel):
    """A grader's answer for one dimension: its labels (none is a valid answer for ``multi``)."""

    labels: list[LabelVerdict] = Field(default_factory=list)
    suggestion: str | None = None


class LabelRow(NamedTuple):
    label: str
    evidence: list[int]
    reason: str | None


class StoredVerdict(NamedTuple):
    """A verdict already validated (a parsed reply, the local grader's decision, a cache entry): the same
    fields as ``DimensionVerdict`` without building a pydantic model for each of the tens of thousands a
    run handles."""

    labels: list[LabelRow]
    suggestion: str | None


Verdict = DimensionVerdict | StoredVerdict
"""What is stored for a judged dimension: fresh from a grader, or from the cache."""

ConversationVerdicts = dict[str, Verdict]
"""Dimension name -> verdict, for one conversation."""


class BatchReplyBase(BaseModel):
    """Checks that the reply covers the batch: each expected id once, evidence inside the conversation."""

    model_config = ConfigDict(extra="forbid")
    expected: ClassVar[dict[str, int]] = {}
    results: list[Any]

    @model_validator(mode="after")
    def _covers_batch(self) -> BatchReplyBase:
        seen = [r.conversation_id for r in self.results]
        missing = sorted(set(self.expected) - set(seen))
        repeated = sorted({i for i in seen if seen.count(i) > 1})
        problems = []
        if missing:
            problems.append(f"missing conversation ids: {', '.join(missing)}")
        if repeated:
            problems.append(f"conversation ids given more than once: {', '.join(repeated)}")
        for result in self.results:
            size = self.expected.get(result.conversation_id, 0)
            for name, value in result:
                for item in _label_items(value):
                    bad = [i for i in item.evidence if not 0 <= i < size]
                    if bad:
                        problems.append(
                            f"{result.conversation_id}.{name}: evidence {bad} outside messages 0..{size - 1}"
                        )
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _label_items(value: Any) -> list[Any]:
    if isinstance(value, BaseModel) and hasattr(value, "labels"):
        return list(value.labels)
    if isinstance(value, BaseModel) and hasattr(value, "evidence"):
        return [value]
    return []


def dimension_model(name: str, dimension: Dimension) -> type[BaseModel]:
    """The reply model of one dimension: a label (``single``) or a list of findings (``multi``), each
    label a ``Literal`` of the rubric's labels, with evidence and a short reason."""
    label_type: Any = Literal[tuple(dimension.label_ids)]
    evidence: Any = (
        list[int],
        Field(default_factory=list, description="Indices of the messages that show it."),
    )
    reason: Any = (Reason | None, Field(default=None, description="A short reason, one sentence."))
    if dimension.kind == "single":
        fields: dict[str, Any] = {"label": (label_type, ...), "evidence": evidence, "reason": reason}
        if dimension.suggest_new:
            fields["suggestion"] = (
                Annotated[str, Field(max_length=80)] | None,
                Field(default=None, description="A better label, only when none fits."),
            )
        return create_model(f"{_camel(name)}Verdict", __config__=ConfigDict(extra="forbid"), **fields)
    finding = create_model(
        f"{_camel(name)}Finding",
        __config__=ConfigDict(extra="forbid"),
        label=(label_type, ...),
        evidence=evidence,
        reason=reason,
    )
    return create_model(
        f"{_camel(name)}Verdict",
        __config__=ConfigDict(extra="forbid"),
        labels=(list[finding], Field(default_factory=list, description="Empty when no label applies.")),
    )


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def response_model(
    rubric: Rubric, dimensions: list[str], message_counts: dict[str, int]
) -> type[BatchReplyBase]:
    """The reply model for one batch: one result per conversation id, one field per dimension."""
    id_type: Any = Literal[tuple(message_counts)]
    fields: dict[str, Any] = {"conversation_id": (id_type, ...)}
    for name in dimensions:
        dimension = rubric.dimension(name)
        fields[name] = (dimension_model(name, dimension), Field(..., description=dimension.question))
    result = create_model("ConversationResult", __config__=ConfigDict(extra="forbid"), **fields)
    model = create_model(
        "BatchReply",
        __base__=BatchReplyBase,
        results=(list[result], Field(..., description="One entry per conversation, each id exactly once.")),
    )
    model.expected = dict(message_counts)
    return model


def normalise(reply: BatchReplyBase, dimensions: list[str]) -> dict[str, ConversationVerdicts]:
    """Turn a validated reply into provider-independent verdicts: conversation id -> dimension -> verdict."""
    out: dict[str, ConversationVerdicts] = {}
    for result in reply.results:
        verdicts: ConversationVerdicts = {}
        for name in dimensions:
            value = getattr(result, name)
            items = value.labels if hasattr(value, "labels") else [value]
            verdicts[name] = DimensionVerdict(
                labels=[
                    LabelVerdict(label=i.label, evidence=list(i.evidence), reason=i.reason) for i in items
                ],
                suggestion=getattr(value, "suggestion", None),
            )
        out[result.conversation_id] = verdicts
    return out
