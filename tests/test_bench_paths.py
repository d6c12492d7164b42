"""The fast paths added for throughput give the same results as the plain ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlmodel import Session, select

from judge.batching import prepare
from judge.cache import DiskVerdictCache, Judged, cache_key, decode, encode
from judge.conversation import Conversation
from judge.providers import create
from judge.providers.base import JudgeRequest
from judge.providers.batch_model import ReplyModels, normalise
from judge.rubric import load_rubric
from judge.runner import Runner, RunOptions
from judge.signals import detect
from judge.store.conversations import ensure_project, load_conversations, load_signals, store_conversations
from judge.store.db import engine
from judge.store.tables import ConversationRecord, Judgement
from judge.verdict import DimensionVerdict, LabelVerdict, response_model


def _conversation(cid: str, *turns: str) -> Conversation:
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]
    return Conversation.model_validate({"id": cid, "messages": messages, "metadata": {"language": "en"}})


CONVERSATIONS = [
    _conversation("a", "I want a refund", "Sure", "you stupid bot, forget it"),
    _conversation("b", "where is my package?", "I can't help with that", "where is my package??", "ok"),
    _conversation("c", "thanks a lot, that fixed it"),
]


def test_cache_entries_keep_each_dimension_with_its_truncation(tmp_path: Path):
    cache = DiskVerdictCache(tmp_path / "cache")
    verdict = DimensionVerdict(labels=[LabelVerdict(label="x", evidence=[1], reason="r")], suggestion="s")
    key = cache_key("grader", "content")
    cache.set_many({key: {"dim-a": Judged(verdict, True), "dim-b": Judged(DimensionVerdict(), False)}})
    found = cache.get_many([key, cache_key("grader", "missing")])
    assert set(found) == {key}
    a, b = found[key]["dim-a"], found[key]["dim-b"]
    assert a.truncated is True and b.truncated is False
    assert a.verdict.labels == [("x", [1], "r")] and a.verdict.suggestion == "s"
    assert b.verdict.labels == [] and b.verdict.suggestion is None
    assert decode(encode(found[key])) == found[key]
    assert cache_key("grader", "content") != cache_key("other grader", "content")


def test_reply_model_and_prompt_match_the_plain_builders():
    rubric = load_rubric("default")
    provider = create("litellm:openai/x", api_key="k")
    prepared = [prepare(c, 4000) for c in CONVERSATIONS]
    models = ReplyModels()
    for batch in (prepared, prepared[:1]):
        counts = {c.id: len(c.conversation.messages) for c in batch}
        dims = tuple(rubric.dimensions)
        fast, plain = models.model(rubric, dims, counts), response_model(rubric, list(dims), counts)
        assert json.dumps(fast.model_json_schema()) == json.dumps(plain.model_json_schema())
        request = JudgeRequest(rubric, dims, batch, {})
        assert provider.messages(request)[1]["content"].count("<conversation id=") == len(batch)
    reply = {
        "results": [
            {
                "conversation_id": "a",
                **{d: {"labels": []} for d in ("emotion", "risk", "feedback")},
                **{
                    d: {"label": rubric.dimension(d).label_ids[0], "evidence": [0]}
                    for d in ("topic", "sentiment_start", "sentiment_end", "failure")
                },
            }
        ]
    }
    counts = {"a": 4}
    dims = tuple(rubric.dimensions)
    parsed = models.model(rubric, dims, counts).model_validate(reply)
    plain = response_model(rubric, list(dims), counts).model_validate(reply)
    from judge.verdict import normalise as plain_normalise

    def rows(verdicts: dict) -> dict:
        def plain(v: object) -> tuple:
            return [(i.label, i.evidence, i.reason) for i in v.labels], v.suggestion

        return {cid: {d: plain(v) for d, v in per.items()} for cid, per in verdicts.items()}

    fast_verdicts = normalise(parsed, dims)
    assert rows(fast_verdicts) == rows(plain_normalise(plain, list(dims)))
    assert fast_verdicts["a"]["topic"].labels[0] == (rubric.dimension("topic").label_ids[0], [0], None)


@pytest.fixture
def db(database_url: str) -> Session:
    with Session(engine(database_url), expire_on_commit=False) as opened:
        store_conversations(opened, ensure_project(opened).id or 0, CONVERSATIONS)
        yield opened


def test_stored_conversations_and_signals_read_back_as_given(db: Session):
    records = {r.external_id: r.id for r in db.exec(select(ConversationRecord))}
    loaded = load_conversations(db, list(records.values()))
    signals = load_signals(db, list(records.values()))
    for conversation in CONVERSATIONS:
        record_id = records[conversation.id]
        again = loaded[record_id]
        assert [(m.role, m.content) for m in again.messages] == [
            (m.role, m.content) for m in conversation.messages
        ]
        assert again.content_hash() == conversation.content_hash()
        assert signals.get(record_id, []) == detect(conversation)


def test_a_killed_run_resumes_from_the_command_line(db: Session, database_url: str, tmp_path: Path):
    from typer.testing import CliRunner

    from judge.cli import app

    runner = Runner(db, RunOptions(grader="fake", batch_size=1, concurrency=1))
    run = runner.start()  # started, never executed: as if killed before its first batch
    result = CliRunner().invoke(app, ["run", "--resume", str(run.id), "--db", database_url, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["conversations"] == 3
    rows = db.exec(select(Judgement).where(Judgement.run_id == run.id)).all()
    assert len(rows) == 3 * 7 == len({(r.conversation_id, r.dimension) for r in rows})
    again = CliRunner().invoke(app, ["run", "--resume", str(run.id), "--db", database_url])
    assert again.exit_code == 2 and "completed" in again.output
