"""Token counting, the truncation policy and packing under a budget."""

from __future__ import annotations

from judge.batching import count_tokens, pack, prepare
from judge.conversation import Conversation


def _conversation(cid: str, turns: int, words: int = 20) -> Conversation:
    messages = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i} " + "word " * words}
        for i in range(turns)
    ]
    return Conversation.model_validate({"id": cid, "messages": messages})


def test_tokens_are_counted_offline():
    assert count_tokens("hello world") == 2


def test_long_conversations_keep_start_and_end():
    prepared = prepare(_conversation("long", 40), max_tokens=300)
    assert prepared.truncated
    assert prepared.tokens <= 300
    kept = [m for m in prepared.messages if not m.omitted]
    gap = [m for m in prepared.messages if m.omitted]
    assert kept[0].index == 0 and kept[-1].index == 39
    assert len(gap) == 1 and gap[0].omitted == 40 - len(kept)
    # original indices survive, so evidence still points at the stored message
    assert all(m.content.startswith(f"message {m.index} ") for m in kept)


def test_short_conversations_are_untouched():
    prepared = prepare(_conversation("short", 4), max_tokens=4000)
    assert not prepared.truncated and len(prepared.messages) == 4


def test_packing_respects_size_budget_and_dimension_sets():
    dims_a, dims_b = ("topic", "risk"), ("risk",)
    items = [(prepare(_conversation(f"c{i}", 2), 4000), dims_a if i % 3 else dims_b) for i in range(20)]
    batches = list(pack(items, batch_size=5, token_budget=10_000))
    assert sum(len(b.conversations) for b in batches) == 20
    assert all(len(b.conversations) <= 5 for b in batches)
    for batch in batches:
        expected = [dims_a if int(c.id[1:]) % 3 else dims_b for c in batch.conversations]
        assert all(d == batch.dimensions for d in expected)
    tight = list(pack(items, batch_size=50, token_budget=items[0][0].tokens * 2))
    assert all(b.tokens <= items[0][0].tokens * 2 for b in tight)
