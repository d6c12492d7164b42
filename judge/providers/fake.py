"""A deterministic grader for tests, registered through the same registry as the real ones.

For each dimension it gives the labels whose examples occur word for word in the conversation's user
messages (a single-label dimension takes the first such label, else its first label), so a test can
state which labels an input implies. ``refuse`` lists conversation ids whose presence in a batch makes
the reply invalid, to exercise re-asks and batch splitting.
"""

from __future__ import annotations

from collections.abc import Iterable

from judge.errors import InvalidReplyError
from judge.providers.base import GraderSpec, JudgeReply, JudgeRequest, Usage, register
from judge.verdict import ConversationVerdicts, DimensionVerdict, LabelVerdict


@register("fake")
class FakeProvider:
    default_batch_size = 10

    def __init__(self, model: str = "fake", refuse: Iterable[str] = (), **params: object) -> None:
        self.spec = GraderSpec(
            provider="fake",
            model=model,
            params=dict(params),
            prompt_name="fake",
            prompt_version=1,
            prompt_hash="fake-v1",
        )
        self.refuse = set(refuse)
        self.calls: list[list[str]] = []

    async def judge(self, request: JudgeRequest) -> JudgeReply:
        ids = [c.id for c in request.conversations]
        self.calls.append(ids)
        refused = self.refuse.intersection(ids)
        if refused:
            raise InvalidReplyError(f"reply left out {', '.join(sorted(refused))}")
        verdicts: dict[str, ConversationVerdicts] = {}
        for prepared in request.conversations:
            messages = prepared.conversation.messages
            per_dimension: ConversationVerdicts = {}
            for name in request.dimensions:
                dimension = request.rubric.dimension(name)
                found = [
                    LabelVerdict(label=label.id, evidence=[i], reason="example found")
                    for label in dimension.labels
                    for i, m in enumerate(messages)
                    if m.role.value == "user" and any(e.lower() in m.content.lower() for e in label.examples)
                ]
                found = list({v.label: v for v in reversed(found)}.values())[::-1]
                if dimension.kind == "single":
                    found = found[:1] or [LabelVerdict(label=dimension.labels[0].id)]
                per_dimension[name] = DimensionVerdict(labels=found)
            verdicts[prepared.id] = per_dimension
        tokens = sum(c.tokens for c in request.conversations)
        usage = Usage(calls=1, prompt_tokens=tokens, completion_tokens=20 * len(ids))
        return JudgeReply(verdicts=verdicts, usage=usage, request={"ids": ids}, raw_reply=None)
