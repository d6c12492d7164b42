"""A run: select -> cache -> batch -> call -> validate -> store, with bounded concurrency.

Conversations stream from the database in chunks of ids and content hashes. The cache is asked about a
whole chunk at once and its hits are stored at once, without reading the conversations. Only the misses
are loaded (messages, and the signals stored at ingestion when the grader uses them), prepared (token
counted and truncated when the grader has a context window) and packed into batches (K conversations x
the dimensions still to judge), which workers send with at most ``concurrency`` calls in flight.
A batch whose reply stays invalid after the provider's re-asks is split in two and retried, down to
single conversations; what still fails is stored as *unscored* with its reason, never given a label.
Every stored outcome is committed with the run's progress counters, so a run killed at any point can be
resumed and judges only what it had not stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import Engine
from sqlmodel import Session

from judge.batching import Batch, Packer, PreparedConversation, prepare, whole
from judge.cache import Entry, Judged, NoCache, VerdictCache, cache_key
from judge.conversation import Conversation
from judge.errors import InvalidReplyError, ProviderError
from judge.providers.base import (
    ConnectionLimited,
    JudgeReply,
    JudgeRequest,
    Provider,
    Usage,
    create,
    without_secrets,
)
from judge.rubric import Rubric, load_rubric
from judge.signals import SignalHit
from judge.store.conversations import (
    Selected,
    count_latest,
    ensure_project,
    load_conversations,
    load_signals,
    select_latest,
)
from judge.store.judgements import Outcome, call_row, ensure_grader, ensure_rubric_version, judged_pairs
from judge.store.tables import RubricVersion, Run, utcnow
from judge.store.writer import Job, Writer

CHUNK = 1000
"""Conversations selected, looked up in the cache and committed (for the hits) at a time."""
LOAD = 100
"""Misses read from the database at a time: between two reads the event loop serves the calls."""


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
    signals: list[SignalHit]
    key: str
    """Its cache key."""
    cached: Entry
    """What the cache already had for it (other dimensions), kept in the entry written back."""


@dataclass
class _Execution:
    """The state of one ``execute`` call."""

    run: Run
    summary: RunSummary
    notify: Progress
    usage: Usage = field(default_factory=Usage)
    pending: dict[str, _Pending] = field(default_factory=dict)
    done: int = 0
    resumed: bool = False
    """The run had stored outcomes before this execution: skip what it stored."""

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
        self.resumed = run.judged > 0
        self.usage = Usage(
            calls=run.calls,
            prompt_tokens=run.prompt_tokens,
            completion_tokens=run.completion_tokens,
            cost_usd=run.cost_usd,
            retries=run.retries,
        )

    def finished(self, conversations: int) -> None:
        """Count conversations whose every outcome is about to be committed (before the commit, so the
        stored progress always matches the stored outcomes)."""
        if conversations:
            self.done += conversations
            self.notify(conversations)

    def counters(self) -> dict[str, Any]:
        """The run row's counters now, to be committed with the outcomes they count."""
        s, usage = self.summary, self.usage
        return {
            "conversations": self.done,
            "judged": s.judgements,
            "cache_hits": s.cache_hits,
            "unscored": s.unscored,
            "calls": usage.calls,
            "retries": usage.retries,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "cost_usd": round(usage.cost_usd, 6),
        }

    def checkpoint(self) -> None:
        """Copy the counters onto the run row object."""
        for name, value in self.counters().items():
            setattr(self.run, name, value)


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
        self._writer: Writer | None = None
        self.storage_cpu_s = 0.0
        """CPU seconds the last ``execute`` spent storing results (the writer's thread)."""

    @property
    def counts_tokens(self) -> bool:
        """Whether the grader has a context window: conversations are then token counted, truncated to
        ``max_conversation_tokens`` and packed under ``token_budget``. Graders say so with a
        ``counts_tokens`` attribute; one that does not is assumed to need it."""
        return bool(getattr(self.provider, "counts_tokens", True))

    @property
    def uses_signals(self) -> bool:
        """Whether the grader reads the deterministic signals (``uses_signals``, assumed when absent)."""
        return bool(getattr(self.provider, "uses_signals", True))

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
        self.session.add(run)
        self.session.commit()
        _freeze_long_lived()
        engine = self.session.get_bind()
        assert isinstance(engine, Engine)
        threaded = not (engine.dialect.name == "sqlite" and engine.url.database in (None, "", ":memory:"))
        self._writer = Writer(engine, run.id, self.cache, threaded=threaded)
        concurrency = self.options.concurrency
        provider = self.provider
        in_flight = provider.connections(concurrency) if isinstance(provider, ConnectionLimited) else None
        # When the provider holds its calls in flight to `concurrency` itself, as many workers again have
        # their requests ready for the moment a connection frees (they wait at most one call's latency).
        count = concurrency * 2 if in_flight is not None else concurrency
        queue: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=count * 2)

        async def worker() -> None:
            while (batch := await queue.get()) is not None:
                await asyncio.sleep(0)  # let replies that freed a connection hand it over first
                await self._judge(state, batch)

        try:
            async with in_flight or contextlib.nullcontext():
                workers = [asyncio.create_task(worker()) for _ in range(count)]
                try:
                    async for batch in self._batches(state):
                        await queue.put(batch)
                        await asyncio.sleep(0)  # a put into a queue with room never waits: let a worker run
                    for _ in workers:
                        await queue.put(None)
                    await asyncio.gather(*workers)
                except BaseException:
                    # Stop the workers while their connections are still open: a call cut off by closing
                    # them would be stored as a provider error, and a resumed run would not judge it again.
                    for task in workers:
                        task.cancel()
                    await asyncio.gather(*workers, return_exceptions=True)
                    raise
        except BaseException as error:
            cancelled = isinstance(error, asyncio.CancelledError | KeyboardInterrupt)
            self._finish(
                state, "cancelled" if cancelled else "failed", started, str(error) or type(error).__name__
            )
            raise
        return self._finish(state, "completed", started)

    def _submit(self, state: _Execution, job: Job) -> None:
        assert self._writer is not None
        self._writer.submit(job)

    async def _batches(self, state: _Execution) -> AsyncIterator[Batch]:
        """Batches of the misses, chunk after chunk of the selection; between chunks the workers get the
        event loop to store what came back."""
        budget = self.options.token_budget if self.counts_tokens else None
        packer = Packer(self.batch_size, budget)
        options = self.options
        selection = select_latest(self.session, state.run.project_id, options.ids, options.limit, CHUNK)
        for rows in selection:
            for prepared, needed in self._walk_chunk(state, rows):
                for batch in packer.add(prepared, needed):
                    yield batch
            self.session.commit()  # end the read transaction: SQLite's WAL cannot be checkpointed past it
            await asyncio.sleep(0)
        for batch in packer.flush():
            yield batch

    def _prepare(self, conversation: Conversation) -> PreparedConversation:
        if not self.counts_tokens:
            return whole(conversation)
        return prepare(conversation, self.options.max_conversation_tokens)

    def _walk_chunk(
        self, state: _Execution, rows: list[Selected]
    ) -> Iterator[tuple[PreparedConversation, tuple[str, ...]]]:
        """Store the chunk's cache hits (one lookup, one commit); yield each miss, prepared, with the
        dimensions it still needs."""
        run_id = state.run.id or 0
        fingerprint = self.provider.spec.fingerprint
        hashes = self._dimension_hashes
        done = judged_pairs(self.session, run_id, [row.id for row in rows]) if state.resumed else set()
        keys = {row.id: cache_key(fingerprint, row.content_hash) for row in rows}
        found = self.cache.get_many(list(keys.values()))
        misses: list[tuple[Selected, str, Entry, tuple[str, ...]]] = []
        outcomes: list[Outcome] = []
        complete = 0
        for row in rows:
            entry = found.get(keys[row.id], {})
            needed: list[str] = []
            hit = False
            for dimension in self.dimensions:
                if (row.id, dimension) in done:  # stored by an earlier execution of this run
                    continue
                judged = entry.get(hashes[dimension])
                if judged is None:
                    needed.append(dimension)
                else:
                    hit = True
                    outcomes.append(Outcome(row.id, dimension, judged.verdict, None, judged.truncated, True))
            if needed:
                misses.append((row, keys[row.id], entry, tuple(needed)))
            elif hit:
                complete += 1
        state.summary.conversations += len(rows)
        state.finished(complete)
        state.count(outcomes)
        if outcomes or complete:
            self._submit(state, Job(outcomes, state.counters()))
        for start in range(0, len(misses), LOAD):
            part = misses[start : start + LOAD]
            ids = [row.id for row, _key, _entry, _dimensions in part]
            conversations = load_conversations(self.session, ids)
            signals = load_signals(self.session, ids) if self.uses_signals else {}
            for row, key, entry, dimensions in part:
                conversation = conversations[row.id]
                state.pending[conversation.id] = _Pending(row.id, signals.get(row.id, []), key, entry)
                yield self._prepare(conversation), dimensions

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
            call = self._call(state, batch, failed, str(error))
            if len(batch.conversations) > 1:
                self._submit(state, Job([], state.counters(), call))
                first, second = batch.split()
                await asyncio.gather(self._judge(state, first), self._judge(state, second))
            else:
                self._store_batch(state, batch, None, f"invalid reply: {error}", call, link=False)
            return
        except ProviderError as error:
            call = self._call(state, batch, None, str(error))
            self._store_batch(state, batch, None, f"provider error: {error}", call)
            return
        state.usage.add(reply.usage)
        self._store_batch(state, batch, reply, None, self._call(state, batch, reply, None))

    def _call(
        self, state: _Execution, batch: Batch, reply: JudgeReply | None, error: str | None
    ) -> dict[str, Any] | None:
        """The provider call row of a batch; none for an in-process grader (local), which makes no call."""
        if reply is not None and reply.usage.calls == 0 and error is None:
            return None
        return call_row(state.run.id or 0, batch.dimensions, len(batch.conversations), reply, error)

    def _store_batch(
        self,
        state: _Execution,
        batch: Batch,
        reply: JudgeReply | None,
        error: str | None,
        call: dict[str, Any] | None,
        link: bool = True,
    ) -> None:
        """Hand the batch's outcomes to the writer, with its provider call (the judgements point at it
        unless ``link`` is False: a single conversation's failed call is stored, but its unscored
        judgements, like before splitting, point at no call)."""
        outcomes: list[Outcome] = []
        fresh: dict[str, Entry] = {}
        for prepared in batch.conversations:
            item = state.pending.pop(prepared.id)
            verdicts = reply.verdicts.get(prepared.id, {}) if reply else {}
            entry = dict(item.cached)
            for dimension in batch.dimensions:
                verdict = verdicts.get(dimension)
                reason = error or (None if verdict else "reply had no verdict for this dimension")
                outcomes.append(Outcome(item.record_id, dimension, verdict, reason, prepared.truncated))
                if verdict is not None:
                    entry[self._dimension_hashes[dimension]] = Judged(verdict, prepared.truncated)
            if len(entry) > len(item.cached):
                fresh[item.key] = entry
        state.count(outcomes)
        state.finished(len(batch.conversations))
        if link or call is None:
            self._submit(state, Job(outcomes, state.counters(), call, fresh))
        else:
            self._submit(state, Job([], state.counters(), call))
            self._submit(state, Job(outcomes, state.counters(), None, fresh))

    def _finish(self, state: _Execution, status: str, started: float, error: str | None = None) -> RunSummary:
        """Wait for the writer to store everything handed to it, then close the run row. Should storing
        have failed, the row keeps the counters of what was committed."""
        self.session.rollback()
        stored = True
        if self._writer is not None:
            try:
                self._writer.close()
            except RuntimeError as failure:
                stored, status, error = False, "failed", error or str(failure)
            self.storage_cpu_s = self._writer.cpu_s
            self._writer = None
        summary, usage = state.summary, state.usage
        summary.status = status
        summary.calls, summary.retries = usage.calls, usage.retries
        summary.prompt_tokens, summary.completion_tokens = usage.prompt_tokens, usage.completion_tokens
        summary.cost_usd = round(usage.cost_usd, 6)
        summary.wall_s = round(time.perf_counter() - started, 3)
        if stored:
            state.checkpoint()
        state.run.status, state.run.error, state.run.finished_at = status, error, utcnow()
        self.session.add(state.run)
        self.session.commit()
        return summary


@functools.cache
def _freeze_long_lived() -> None:
    """Put every object alive when the process first runs (its modules, loaded models, the app) out of
    reach of the garbage collector, once per process. Full collections otherwise walk them all, and
    their pauses (a quarter of a second with litellm imported) stall the event loop while replies wait
    and connections idle. Only what was already cyclic garbage at that moment is never freed."""
    gc.freeze()


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
