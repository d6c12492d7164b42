"""A run: select -> signals -> cache -> batch -> call -> validate -> store, with bounded concurrency.

Conversations stream from the database in chunks; cache hits are stored at once; misses are packed into
batches (K conversations x the dimensions still to judge) and sent by at most ``concurrency`` workers.
A batch whose reply stays invalid after the provider's re-asks is split in two and retried, down to
single conversations; what still fails is stored as *unscored* with its reason, never given a label.
Every stored outcome is committed with the run's progress counters, so a run killed at any point can be
resumed and judges only what it had not stored.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field
from sqlmodel import Session

from judge.batching import Batch, PreparedConversation, pack, prepare
from judge.cache import NoCache, VerdictCache, cache_key
from judge.conversation import Conversation
from judge.errors import InvalidReplyError, ProviderError
from judge.providers.base import JudgeReply, JudgeRequest, Provider, Usage, create, without_secrets
from judge.rubric import Rubric, load_rubric
from judge.signals import SignalHit, detect
from judge.store.conversations import count_latest, ensure_project, iter_latest
from judge.store.judgements import (
    Outcome,
    ensure_grader,
    ensure_rubric_version,
    judged_pairs,
    record_call,
    store_outcomes,
)
from judge.store.tables import RubricVersion, Run, utcnow
from judge.verdict import DimensionVerdict

CHUNK = 500


class RunOptions(BaseModel):
    """What to judge and how; the CLI's and the API's run requests both become one of these."""

    rubric: str = "default"
    grader: str = "local"
    grader_options: dict[str, Any] = Field(default_factory=dict)
    dimensions: list[str] | None = None
    ids: list[str] | None = None
    limit: int | None = Field(default=None, ge=1)
    batch_size: int | None = Field(default=None, ge=1, le=200)
    concurrency: int = Field(default=4, ge=1, le=256)
    token_budget: int = Field(default=12_000, ge=500, description="Conversation tokens per call.")
    max_conversation_tokens: int = Field(default=4_000, ge=200)
    project: str = "default"


class RunSummary(BaseModel):
    run_id: int
    status: str
    grader: str
    rubric: str
    conversations: int = 0
    judgements: int = 0
    cache_hits: int = 0
    unscored: int = 0
    calls: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    wall_s: float = 0.0
    fresh_by_dimension: dict[str, int] = Field(default_factory=dict)
    unscored_reasons: dict[str, int] = Field(default_factory=dict)


Progress = Callable[[int], None]
"""Called with the number of conversations just finished."""


@dataclass
class _Pending:
    """A conversation waiting on a batch, with what is needed to store its verdicts."""

    record_id: int
    prepared: PreparedConversation
    signals: list[SignalHit]
    keys: dict[str, str]


@dataclass
class _Execution:
    """The state of one ``execute`` call."""

    run: Run
    summary: RunSummary
    notify: Progress
    usage: Usage = field(default_factory=Usage)
    pending: dict[str, _Pending] = field(default_factory=dict)
    done: int = 0

    def count(self, outcomes: list[Outcome]) -> None:
        s = self.summary
        s.judgements += len(outcomes)
        for o in outcomes:
            if o.cache_hit:
                s.cache_hits += 1
            elif o.verdict is None:
                s.unscored += 1
                reason = (o.reason or "unknown").split(":")[0][:80]
                s.unscored_reasons[reason] = s.unscored_reasons.get(reason, 0) + 1
            else:
                s.fresh_by_dimension[o.dimension] = s.fresh_by_dimension.get(o.dimension, 0) + 1

    def resume_counters(self) -> None:
        """Start from what the run already counted, so a resumed run's totals stay whole."""
        s, run = self.summary, self.run
        s.judgements, s.cache_hits, s.unscored = run.judged, run.cache_hits, run.unscored
        self.usage = Usage(
            calls=run.calls,
            prompt_tokens=run.prompt_tokens,
            completion_tokens=run.completion_tokens,
            cost_usd=run.cost_usd,
            retries=run.retries,
        )

    def finished(self, conversations: int) -> None:
        self.done += conversations
        self.notify(conversations)

    def checkpoint(self) -> None:
        """Copy the counters onto the run row, to be committed with the outcomes they count."""
        s, run = self.summary, self.run
        run.conversations, run.judged, run.cache_hits, run.unscored = (
            self.done,
            s.judgements,
            s.cache_hits,
            s.unscored,
        )
        run.calls, run.retries = self.usage.calls, self.usage.retries
        run.prompt_tokens, run.completion_tokens = self.usage.prompt_tokens, self.usage.completion_tokens
        run.cost_usd = round(self.usage.cost_usd, 6)


class Runner:
    """Executes runs against one database session; see the module docstring for the flow."""

    def __init__(
        self,
        session: Session,
        options: RunOptions,
        cache: VerdictCache | None = None,
        provider: Provider | None = None,
        rubric: Rubric | None = None,
    ) -> None:
        self.session = session
        self.options = options
        self.cache: VerdictCache = cache if cache is not None else NoCache()
        self.rubric = rubric or load_rubric(options.rubric)
        self.dimensions = self.rubric.select(options.dimensions)
        self.provider = provider or create(options.grader, **options.grader_options)
        self.batch_size = options.batch_size or int(getattr(self.provider, "default_batch_size", 10))
        self._dimension_hashes = {d: self.rubric.dimension(d).content_hash() for d in self.dimensions}

    @classmethod
    def resume(cls, session: Session, run: Run, cache: VerdictCache | None = None) -> Runner:
        """A runner for an existing run, with its stored options and rubric version; ``execute`` then
        judges only what the run has not stored yet."""
        rubric_row = session.get(RubricVersion, run.rubric_version_id)
        assert rubric_row is not None
        options = RunOptions.model_validate(run.options)
        return cls(session, options, cache=cache, rubric=Rubric.model_validate(rubric_row.body))

    def start(self) -> Run:
        """Create the run row (status ``running``); ``execute`` fills it."""
        project = ensure_project(self.session, self.options.project)
        rubric_row = ensure_rubric_version(self.session, self.rubric)
        grader_row = ensure_grader(self.session, self.provider.spec)
        assert project.id is not None and rubric_row.id is not None
        total = count_latest(self.session, project.id, self.options.ids)
        run = Run(
            project_id=project.id,
            rubric_version_id=rubric_row.id,
            grader_id=grader_row.id,
            dimensions=self.dimensions,
            batch_size=self.batch_size,
            concurrency=self.options.concurrency,
            options=self.options.model_copy(
                update={"grader_options": without_secrets(self.options.grader_options)}
            ).model_dump(mode="json"),
            total=min(total, self.options.limit or total),
        )
        self.session.add(run)
        self.session.commit()
        return run

    async def execute(self, run: Run, progress: Progress | None = None) -> RunSummary:
        """Judge every selected conversation that ``run`` has not stored yet."""
        assert run.id is not None
        started = time.perf_counter()
        summary = RunSummary(
            run_id=run.id,
            status="running",
            grader=self.provider.spec.label,
            rubric=f"{self.rubric.name} v{self.rubric.version}",
        )
        state = _Execution(run, summary, progress or (lambda _n: None), done=run.conversations)
        state.resume_counters()
        run.status, run.error, run.finished_at = "running", None, None
        queue: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=self.options.concurrency * 2)

        async def worker() -> None:
            while (batch := await queue.get()) is not None:
                await self._judge(state, batch)
                state.finished(len(batch.conversations))

        workers = [asyncio.create_task(worker()) for _ in range(self.options.concurrency)]
        try:
            for batch in pack(self._misses(state), self.batch_size, self.options.token_budget):
                await queue.put(batch)
            for _ in workers:
                await queue.put(None)
            await asyncio.gather(*workers)
        except BaseException as error:
            for task in workers:
                task.cancel()
            cancelled = isinstance(error, asyncio.CancelledError | KeyboardInterrupt)
            self._finish(
                state, "cancelled" if cancelled else "failed", started, str(error) or type(error).__name__
            )
            raise
        return self._finish(state, "completed", started)

    def _misses(self, state: _Execution) -> Iterator[tuple[PreparedConversation, tuple[str, ...]]]:
        """Walk the selection: store cache hits; yield each conversation with the dimensions it needs."""
        chunk: list[tuple[int, Conversation]] = []
        selection = iter_latest(
            self.session, state.run.project_id, self.options.ids, self.options.limit, CHUNK
        )
        for record, conversation in selection:
            chunk.append((record.id or 0, conversation))
            if len(chunk) >= CHUNK:
                yield from self._walk_chunk(state, chunk)
                chunk = []
        yield from self._walk_chunk(state, chunk)

    def _walk_chunk(
        self, state: _Execution, chunk: list[tuple[int, Conversation]]
    ) -> Iterator[tuple[PreparedConversation, tuple[str, ...]]]:
        if not chunk:
            return
        run_id = state.run.id or 0
        fingerprint = self.provider.spec.fingerprint
        done = judged_pairs(self.session, run_id, [record_id for record_id, _ in chunk])
        hits: list[Outcome] = []
        complete = 0
        for record_id, conversation in chunk:
            prepared = prepare(conversation, self.options.max_conversation_tokens)
            content = conversation.content_hash()
            keys = {d: cache_key(fingerprint, self._dimension_hashes[d], content) for d in self.dimensions}
            needed: list[str] = []
            if all((record_id, d) in done for d in self.dimensions):
                continue  # finished by an earlier execution of this run
            for dimension in self.dimensions:
                if (record_id, dimension) in done:
                    continue
                cached = self.cache.get(keys[dimension])
                if cached is None:
                    needed.append(dimension)
                else:
                    hits.append(
                        Outcome(record_id, dimension, cached, truncated=prepared.truncated, cache_hit=True)
                    )
            if needed:
                state.pending[conversation.id] = _Pending(record_id, prepared, detect(conversation), keys)
                yield prepared, tuple(needed)
            else:
                complete += 1
        state.summary.conversations += len(chunk)
        state.finished(complete)
        state.count(hits)
        store_outcomes(self.session, run_id, hits, call_id=None)
        self._commit(state)

    async def _judge(self, state: _Execution, batch: Batch) -> None:
        """Judge a batch; on an invalid reply split it, down to single conversations, then give up."""
        signals = {c.id: state.pending[c.id].signals for c in batch.conversations}
        request = JudgeRequest(self.rubric, batch.dimensions, batch.conversations, signals)
        try:
            reply = await self.provider.judge(request)
        except InvalidReplyError as error:
            failed = error.reply if isinstance(error.reply, JudgeReply) else None
            if failed is not None:
                state.usage.add(failed.usage)
            self._record_call(state, batch, failed, str(error))
            if len(batch.conversations) > 1:
                first, second = batch.split()
                await asyncio.gather(self._judge(state, first), self._judge(state, second))
            else:
                self._store_batch(state, batch, None, f"invalid reply: {error}", None)
            return
        except ProviderError as error:
            call_id = self._record_call(state, batch, None, str(error))
            self._store_batch(state, batch, None, f"provider error: {error}", call_id)
            return
        state.usage.add(reply.usage)
        call_id = self._record_call(state, batch, reply, None)
        self._store_batch(state, batch, reply, None, call_id)

    def _record_call(
        self, state: _Execution, batch: Batch, reply: JudgeReply | None, error: str | None
    ) -> int | None:
        if reply is not None and reply.usage.calls == 0 and error is None:
            return None  # an in-process grader (local) makes no provider call worth a row
        call = record_call(
            self.session, state.run.id or 0, batch.dimensions, len(batch.conversations), reply, error
        )
        return call.id

    def _store_batch(
        self,
        state: _Execution,
        batch: Batch,
        reply: JudgeReply | None,
        error: str | None,
        call_id: int | None,
    ) -> None:
        outcomes: list[Outcome] = []
        fresh: dict[str, DimensionVerdict] = {}
        for prepared in batch.conversations:
            item = state.pending.pop(prepared.id)
            verdicts = reply.verdicts.get(prepared.id, {}) if reply else {}
            for dimension in batch.dimensions:
                verdict = verdicts.get(dimension)
                reason = error or (None if verdict else "reply had no verdict for this dimension")
                outcomes.append(Outcome(item.record_id, dimension, verdict, reason, prepared.truncated))
                if verdict is not None:
                    fresh[item.keys[dimension]] = verdict
        state.count(outcomes)
        store_outcomes(self.session, state.run.id or 0, outcomes, call_id)
        self._commit(state)
        self.cache.set_many(fresh)

    def _commit(self, state: _Execution) -> None:
        state.checkpoint()
        self.session.add(state.run)
        self.session.commit()

    def _finish(self, state: _Execution, status: str, started: float, error: str | None = None) -> RunSummary:
        summary, usage = state.summary, state.usage
        summary.status = status
        summary.calls, summary.retries = usage.calls, usage.retries
        summary.prompt_tokens, summary.completion_tokens = usage.prompt_tokens, usage.completion_tokens
        summary.cost_usd = round(usage.cost_usd, 6)
        summary.wall_s = round(time.perf_counter() - started, 3)
        self.session.rollback()
        state.checkpoint()
        state.run.status, state.run.error, state.run.finished_at = status, error, utcnow()
        self.session.add(state.run)
        self.session.commit()
        return summary


async def run_once(
    session: Session,
    options: RunOptions,
    cache: VerdictCache | None = None,
    progress: Progress | None = None,
    provider: Provider | None = None,
) -> RunSummary:
    """Create and execute a run in one go (the CLI's and tests' entry point)."""
    runner = Runner(session, options, cache=cache, provider=provider)
    run = runner.start()
    return await runner.execute(run, progress)
