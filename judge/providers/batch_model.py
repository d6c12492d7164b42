"""The per-batch reply model and prompt of the litellm grader, built at a fraction of the cost.

A batch reply is typed by the rubric and by the batch's conversation ids (a ``Literal``), so it is a new
pydantic model for every call. Built from scratch (``judge.verdict.response_model``) that model, its JSON
Schema and the prompt's Jinja compilation cost ~40 ms of CPU per call, more than everything else on the
client side of a call at 30 calls a second. Here what does not depend on the ids is built once per rubric
and dimensions: the dimension models, the JSON Schema (the ids are put into a copy), the compiled prompt.
The model, the schema and the prompt are the same as ``response_model`` and ``PromptTemplate.render``
give (a test checks it): recorded requests replay byte for byte, validation errors read the same.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field, create_model

from judge.rubric import Rubric
from judge.verdict import BatchReplyBase, ConversationVerdicts, LabelRow, StoredVerdict, dimension_model

RESULT = "ConversationResult"


class PrebuiltSchemaReply(BatchReplyBase):
    """A batch reply whose JSON Schema is a copy of its shape's, with the batch's ids put in."""

    prebuilt: ClassVar[str] = ""

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if args or kwargs or not cls.prebuilt:
            return super().model_json_schema(*args, **kwargs)
        schema: dict[str, Any] = json.loads(cls.prebuilt)
        return schema


@lru_cache(maxsize=1)
def _reply_base() -> type[PrebuiltSchemaReply]:
    """``PrebuiltSchemaReply`` that is also instructor's ``ResponseSchema``: instructor would otherwise
    wrap every batch model in one more generated subclass (the same class, built once more per call).
    Imported late: instructor is heavy and only the litellm grader needs it."""
    from instructor.v2.core.function_calls import ResponseSchema

    class Reply(PrebuiltSchemaReply, ResponseSchema):
        pass

    _skip_async_validator_scan()
    return Reply


def _skip_async_validator_scan() -> None:
    """instructor walks the whole model tree of every call, up to seven times a call, looking for its
    async validators (~8 ms a call here); our reply models never have any, so the walk is skipped for
    them. Any other model is still checked. Patched where instructor looks the function up."""
    import importlib

    for name in ("instructor.v2.validation.async_validators", "instructor.v2.core.patch"):
        module = importlib.import_module(name)
        original = getattr(module, "reject_async_validators", None)
        if original is None or getattr(original, "skips_judge_replies", False):
            continue

        def check(model: Any, _original: Any = original) -> None:
            if isinstance(model, type) and issubclass(model, PrebuiltSchemaReply):
                return
            _original(model)

        check.skips_judge_replies = True  # type: ignore[attr-defined]
        setattr(module, "reject_async_validators", check)  # noqa: B010


class _Shape:
    """What a rubric's dimensions give every batch reply: the dimension fields and schema templates."""

    def __init__(self, rubric: Rubric, dimensions: tuple[str, ...]) -> None:
        self.rubric = rubric
        self.fields: dict[str, Any] = {}
        for name in dimensions:
            dimension = rubric.dimension(name)
            self.fields[name] = (dimension_model(name, dimension), Field(..., description=dimension.question))
        self._templates: dict[bool, tuple[dict[str, Any], dict[str, Any]] | None] = {}

    def model(self, message_counts: dict[str, int]) -> type[BatchReplyBase]:
        ids = tuple(message_counts)
        model = self._build(ids, _reply_base())
        template = self._template(len(ids) == 1)
        if template is not None:
            schema, slot = template
            key = "const" if len(ids) == 1 else "enum"
            slot[key] = ids[0] if len(ids) == 1 else list(ids)
            model.prebuilt = json.dumps(schema)
        model.expected = dict(message_counts)
        return model

    def _build(self, ids: tuple[str, ...], base: type[PrebuiltSchemaReply]) -> type[PrebuiltSchemaReply]:
        id_type: Any = Literal[ids]
        result = create_model(
            RESULT, __config__=ConfigDict(extra="forbid"), conversation_id=(id_type, ...), **self.fields
        )
        return create_model(
            "BatchReply",
            __base__=base,
            results=(
                list[result],
                Field(..., description="One entry per conversation, each id exactly once."),
            ),
        )

    def _template(self, single: bool) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The schema of a batch of one id (``const``) or of several (``enum``), and the dict that holds
        the ids; None if pydantic lays it out differently than expected (then it is generated per call)."""
        if single not in self._templates:
            placeholders = ("__judge_id_0__",) if single else ("__judge_id_0__", "__judge_id_1__")
            schema = self._build(placeholders, PrebuiltSchemaReply).model_json_schema()
            slot = schema.get("$defs", {}).get(RESULT, {}).get("properties", {}).get("conversation_id", {})
            key = "const" if single else "enum"
            expected = placeholders[0] if single else list(placeholders)
            found = slot.get(key) == expected and json.dumps(schema).count("__judge_id_0__") == 1
            self._templates[single] = (schema, slot) if found else None
        return self._templates[single]


class ReplyModels:
    """Batch reply models for one provider, with the per-rubric parts kept between calls."""

    def __init__(self) -> None:
        self._shapes: dict[tuple[int, tuple[str, ...]], _Shape] = {}

    def model(
        self, rubric: Rubric, dimensions: tuple[str, ...], message_counts: dict[str, int]
    ) -> type[BatchReplyBase]:
        key = (id(rubric), dimensions)
        shape = self._shapes.get(key)
        if shape is None or shape.rubric is not rubric:
            if len(self._shapes) > 64:
                self._shapes.clear()
            shape = self._shapes[key] = _Shape(rubric, dimensions)
        return shape.model(message_counts)


def normalise(reply: BatchReplyBase, dimensions: tuple[str, ...]) -> dict[str, ConversationVerdicts]:
    """``judge.verdict.normalise`` for a reply that has just been validated: the verdicts are plain
    ``StoredVerdict`` tuples, not models validated a second time (a batch holds ~70 of them)."""
    out: dict[str, ConversationVerdicts] = {}
    for result in reply.results:
        verdicts: ConversationVerdicts = {}
        values = result.__dict__
        for name in dimensions:
            value = values[name]
            fields = value.__dict__
            items = fields.get("labels", [value])
            labels = [LabelRow(i.label, list(i.evidence), i.reason) for i in items]
            verdicts[name] = StoredVerdict(labels, fields.get("suggestion"))
        out[result.conversation_id] = verdicts
    return out
