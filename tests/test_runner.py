"""The runner through the real registry with the fake grader, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
import yaml
from sqlmodel import Session, func, select

from judge.analytics import Snapshot, dimension_summaries, failure_intelligence
from judge.cache import DiskVerdictCache
from judge.conversation import Conversation
from judge.errors import ProviderError
from judge.providers import create
from judge.providers.base import JudgeReply, JudgeRequest
from judge.providers.fake import FakeProvider
from judge.resources import builtin_dir
from judge.rubric import load_rubric_file
from judge.runner import Runner, RunOptions, run_once
from judge.scope import Scope
from judge.store.conversations import ensure_project, store_conversations
from judge.store.db import engine
from judge.store.tables import Judgement, JudgementLabel, ProviderCall, Run

CONVERSATIONS = [
    ("refund", ["I want a refund for this order", "ok"]),
    ("hack", ["someone hacked my account", "thanks"]),
    ("cancel", ["cancel my subscription", "I'm cancelling and going to your competitor"]),
    ("late", ["where is my package", "still waiting"]),
    ("fire", ["the charger caught fire", "you stupid bot"]),
]


def _conversation(cid: str, turns: list[str]) -> Conversation:
    messages = []
    for turn in turns:
        messages += [{"role": "user", "content": turn}, {"role": "assistant", "content": "Let me check."}]
    return Conversation.model_validate({"id": cid, "messages": messages, "metadata": {"language": "en"}})


@pytest.fixture
def db(database_url: str) -> Session:
    with Session(engine(database_url), expire_on_commit=False) as opened:
        project = ensure_project(opened)
        store_conversations(opened, project.id or 0, [_conversation(c, t) for c, t in CONVERSATIONS])
        yield opened


def _run(db: Session, tmp_path: Path, **options) -> tuple:
    provider = create("fake", refuse=options.pop("refuse", ()))
    rubric = options.pop("rubric_obj", None)
    runner = Runner(
        db,
        RunOptions(grader="fake", **options),
        cache=DiskVerdictCache(tmp_path / "cache"),
        provider=provider,
        rubric=rubric,
    )
    summary = asyncio.run(runner.execute(runner.start()))
    return summary, provider


def _labels(db: Session, run_id: int, dimension: str) -> dict[str, set[str]]:
    from judge.store.tables import ConversationRecord

    rows = db.exec(
        select(ConversationRecord.external_id, JudgementLabel.label)
        .join(ConversationRecord, ConversationRecord.id == JudgementLabel.conversation_id)
        .where(JudgementLabel.run_id == run_id, JudgementLabel.dimension == dimension)
    ).all()
    out: dict[str, set[str]] = {}
    for cid, label in rows:
        out.setdefault(cid, set()).add(label)
    return out


def test_labels_implied_by_the_text_are_stored_and_counted(db: Session, tmp_path: Path):
    summary, provider = _run(db, tmp_path, batch_size=2)
    assert summary.conversations == 5 and summary.unscored == 0
    assert summary.judgements == 5 * 7
    assert [len(c) for c in provider.calls] == [2, 2, 1]
    risks = _labels(db, summary.run_id, "risk")
    assert risks == {"hack": {"privacy"}, "cancel": {"churn_intent"}, "fire": {"safety"}}
    assert _labels(db, summary.run_id, "topic")["refund"] == {"billing.refund"}
    run = db.get(Run, summary.run_id)
    snapshot = Snapshot(db, Scope(project_id=run.project_id, run_id=run.id))
    counts = {s.dimension: s for s in dimension_summaries(snapshot)}
    assert {c.label: c.conversations for c in counts["risk"].labels if c.conversations} == {
        "privacy": 1,
        "churn_intent": 1,
        "safety": 1,
    }
    topics = {t.topic: t for t in failure_intelligence(snapshot)}
    # no topic example occurs in "hack" or "fire", so the fake gives both the first topic; "you stupid bot"
    # is an insult (negative implicit feedback), so "fire" counts as failed and its risk shows up
    login = topics["account.login"]
    assert (login.conversations, login.failed, login.examples) == (2, 1, ["fire"])
    assert login.risks == {"safety": 1}
    assert topics["account.login"] == failure_intelligence(snapshot)[0]
    assert sum(t.failed for t in topics.values()) == 1


def test_second_run_makes_no_provider_calls(db: Session, tmp_path: Path):
    _run(db, tmp_path)
    again, provider = _run(db, tmp_path)
    assert provider.calls == []
    assert again.calls == 0 and again.cache_hits == 5 * 7 and again.judgements == 5 * 7


def test_adding_a_risk_category_rejudges_only_the_risk_dimension(db: Session, tmp_path: Path):
    first, _ = _run(db, tmp_path)
    raw = yaml.safe_load((builtin_dir("rubrics") / "default.yaml").read_text())
    raw["dimensions"]["risk"]["labels"].append(
        {
            "id": "competitor_mention",
            "description": "The user names a competitor.",
            "examples": ["going to your competitor"],
        }
    )
    path = tmp_path / "default.yaml"
    path.write_text(yaml.safe_dump(raw))
    edited = load_rubric_file(path)
    second, provider = _run(db, tmp_path, rubric_obj=edited)
    assert second.fresh_by_dimension == {"risk": 5}
    assert second.cache_hits == 5 * 6
    assert all(c for c in provider.calls)
    assert _labels(db, second.run_id, "risk")["cancel"] == {"churn_intent", "competitor_mention"}
    scope = Scope(project_id=db.get(Run, second.run_id).project_id, run_id=second.run_id)
    summaries = {s.dimension: s for s in dimension_summaries(Snapshot(db, scope))}
    assert {c.label: c.conversations for c in summaries["risk"].labels}["competitor_mention"] == 1
    assert first.run_id != second.run_id


def test_invalid_replies_split_the_batch_and_end_unscored(db: Session, tmp_path: Path):
    summary, provider = _run(db, tmp_path, batch_size=5, refuse=["late"])
    # 5 -> (2, 3) -> the 3 splits to (1, 2) -> (1, 1): "late" alone still fails
    assert provider.calls[0] == ["refund", "hack", "cancel", "late", "fire"]
    assert ["late"] in provider.calls
    assert summary.unscored == 7
    rows = db.exec(select(Judgement).where(Judgement.run_id == summary.run_id)).all()
    assert len(rows) == 5 * 7 == len({(r.conversation_id, r.dimension) for r in rows})
    unscored = [r for r in rows if r.status == "unscored"]
    assert len(unscored) == 7 and all("invalid reply" in (r.reason or "") for r in unscored)
    unscored_labels = db.exec(
        select(func.count())
        .select_from(JudgementLabel)
        .where(JudgementLabel.judgement_id.in_([r.id for r in unscored]))
    ).one()
    assert unscored_labels == 0
    failed_calls = db.exec(select(ProviderCall).where(ProviderCall.status == "failed")).all()
    assert failed_calls and all("late" in (c.error or "") for c in failed_calls)
    # a re-run judges only what is still unscored
    rerun, provider2 = _run(db, tmp_path)
    assert [c for call in provider2.calls for c in call] == ["late"]
    assert rerun.cache_hits == 4 * 7


class _Down:
    """A grader whose provider is unreachable."""

    def __init__(self) -> None:
        self.spec = create("fake").spec

    async def judge(self, request: JudgeRequest) -> JudgeReply:
        raise ProviderError("ServiceUnavailableError: 503 after 6 attempts")


def test_provider_failure_is_recorded_not_guessed(db: Session):
    summary = asyncio.run(run_once(db, RunOptions(grader="fake", batch_size=10), provider=_Down()))
    assert summary.unscored == 5 * 7 and summary.status == "completed"
    assert "provider error" in next(iter(summary.unscored_reasons))
    assert db.exec(select(func.count()).select_from(JudgementLabel)).one() == 0


class _Interrupted:
    """Answers like the fake grader, then is interrupted (as by a shutdown) on its third call."""

    def __init__(self) -> None:
        self.inner = create("fake")
        self.spec = self.inner.spec

    async def judge(self, request: JudgeRequest) -> JudgeReply:
        if len(self.inner.calls) == 2:
            raise asyncio.CancelledError
        return await self.inner.judge(request)


def test_an_interrupted_run_resumes_without_rejudging(db: Session):
    runner = Runner(db, RunOptions(grader="fake", batch_size=2, concurrency=1), provider=_Interrupted())
    run = runner.start()
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(runner.execute(run))
    db.refresh(run)
    assert (run.status, run.conversations, run.judged, run.total) == ("cancelled", 4, 28, 5)
    resumed = Runner.resume(db, run)
    fresh = create("fake")
    resumed.provider = fresh
    asyncio.run(resumed.execute(run))
    assert fresh.calls == [["fire"]]
    rows = db.exec(select(Judgement).where(Judgement.run_id == run.id)).all()
    assert len(rows) == 5 * 7 == len({(r.conversation_id, r.dimension) for r in rows})
    db.refresh(run)
    assert (run.status, run.conversations, run.judged, run.calls) == ("completed", 5, 35, 3)


class _PooledFake(FakeProvider):
    """The fake grader holding its calls in flight at a pool of ``limit``, like the litellm grader."""

    def __init__(self) -> None:
        super().__init__()
        self.limits: list[int] = []
        self.pool: asyncio.Semaphore | None = None
        self.in_flight = self.most_in_flight = self.most_waiting = 0
        self.latency = 0.01

    @contextlib.asynccontextmanager
    async def connections(self, limit: int):
        self.limits.append(limit)
        self.pool = asyncio.Semaphore(limit)
        yield
        self.pool = None

    async def judge(self, request: JudgeRequest) -> JudgeReply:
        assert self.pool is not None, "judge called outside connections()"
        self.most_waiting = max(self.most_waiting, self.in_flight + 1 - self.limits[-1])
        async with self.pool:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            await asyncio.sleep(self.latency)
            self.in_flight -= 1
        if self.pool is None:
            raise ProviderError("the connection pool was closed under the call")
        return await super().judge(request)


def test_a_pooled_provider_has_requests_ready_beyond_its_connections(db: Session, tmp_path: Path):
    """A provider that holds its calls in flight itself is opened with the run's concurrency; the runner
    keeps more requests ready than that, and none goes beyond the limit."""
    provider = _PooledFake()
    runner = Runner(db, RunOptions(grader="fake", batch_size=1, concurrency=2), provider=provider)
    summary = asyncio.run(runner.execute(runner.start()))
    assert provider.limits == [2]
    assert provider.most_in_flight == 2
    assert provider.most_waiting >= 1
    assert summary.unscored == 0 and summary.conversations == 5


def test_a_row_inserted_meanwhile_by_another_process_is_taken_not_an_error(database_url: str):
    """Two runs starting at once both miss the project (or rubric, or grader) and both insert it: the
    second insert breaks the unique key and takes the first's row."""
    from judge.store.db import get_or_create
    from judge.store.tables import Project

    with Session(engine(database_url), expire_on_commit=False) as first:
        existing = ensure_project(first, "raced")
    lookups: list[int] = []

    def find() -> Project | None:
        lookups.append(1)
        if len(lookups) == 1:
            return None  # the other process had not committed yet when this one looked
        with Session(engine(database_url)) as again:
            return again.exec(select(Project).where(Project.name == "raced")).first()

    with Session(engine(database_url), expire_on_commit=False) as second:
        taken = get_or_create(second, find, lambda: Project(name="raced"))
    assert taken.id == existing.id and len(lookups) == 2


def test_a_cancelled_run_stores_no_call_cut_off_by_closing_the_pool(db: Session):
    """Cancelling stops the workers before the provider's connections close: no call in flight is stored
    as a provider error (a resumed run would not judge it again)."""
    provider = _PooledFake()
    provider.latency = 0.2
    runner = Runner(db, RunOptions(grader="fake", batch_size=1, concurrency=2), provider=provider)
    run = runner.start()

    async def cancel_while_calls_are_in_flight() -> None:
        task = asyncio.create_task(runner.execute(run))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_while_calls_are_in_flight())
    db.refresh(run)
    statuses = [j.status for j in db.exec(select(Judgement).where(Judgement.run_id == run.id))]
    assert run.status == "cancelled"
    assert statuses and set(statuses) == {"scored"} and len(statuses) < 5 * 7
