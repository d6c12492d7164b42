"""A run's writes, done by one thread of their own and committed in groups.

The runner's event loop must keep sending calls while earlier results are written: a PostgreSQL commit
or insert is a network round trip, a dozen per batch, and while the loop waits on them no reply is read
and no request leaves. So the loop hands each finished batch (its outcomes, its provider call, the run's
counters after it, its cache entries) to this writer and goes on. The writer takes every job waiting,
writes them in one transaction together with the last job's counters, commits, and only then fills the
cache. Jobs are applied in order, so the committed counters always count exactly the committed outcomes,
and a run killed at any point resumes from a consistent state.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, update
from sqlmodel import Session

from judge.cache import Entry, VerdictCache
from judge.store.judgements import Outcome, insert_call, store_outcome_groups
from judge.store.tables import Run

MAX_GROUP_OUTCOMES = 20_000
"""Outcomes written in one transaction at most: a long transaction holds the write lock (SQLite)."""
QUEUE_JOBS = 256
"""Jobs waiting at most; past that the event loop waits for the writer (back-pressure)."""


@dataclass
class Job:
    """What one finished batch (or a chunk's cache hits) stores."""

    outcomes: list[Outcome]
    counters: dict[str, Any]
    call: dict[str, Any] | None = None
    cache: dict[str, Entry] = field(default_factory=dict)


class Writer:
    """Applies jobs for run ``run_id`` in a thread (``threaded``) or at once in the caller's."""

    def __init__(self, engine: Engine, run_id: int, cache: VerdictCache, threaded: bool = True) -> None:
        self.engine = engine
        self.run_id = run_id
        self.cache = cache
        self.threaded = threaded
        self.error: BaseException | None = None
        self.commits = 0
        self.cpu_s = 0.0
        """CPU seconds spent writing (in the writer's thread), for benchmarks."""
        self._jobs: queue.Queue[Job | None] = queue.Queue(maxsize=QUEUE_JOBS)
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = threading.Thread(target=self._work, name=f"run-{run_id}-writer", daemon=True)
            self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue ``job``; raises the error that stopped the writer, if one did."""
        self._raise()
        if not self.threaded:
            self._apply([job])
            return
        self._jobs.put(job)

    def close(self) -> None:
        """Write everything submitted, stop the thread, and raise the writer's error if it had one."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()
            self._thread = None
        self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"storing the run's results failed: {self.error}") from self.error

    def _work(self) -> None:
        stop = False
        while not stop:
            job = self._jobs.get()
            if job is None:
                return
            group = [job]
            size = len(job.outcomes)
            while size < MAX_GROUP_OUTCOMES:
                try:
                    more = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                group.append(more)
                size += len(more.outcomes)
            if self.error is None:
                try:
                    self._apply(group)
                except BaseException as error:  # kept for the event loop to raise
                    self.error = error

    def _apply(self, group: list[Job]) -> None:
        started = time.thread_time()
        try:
            self._write(group)
        finally:
            self.cpu_s += time.thread_time() - started

    def _write(self, group: list[Job]) -> None:
        with Session(self.engine, expire_on_commit=False) as session:
            stored = [
                (job.outcomes, insert_call(session, job.call) if job.call is not None else None)
                for job in group
            ]
            store_outcome_groups(session, self.run_id, stored)
            values = group[-1].counters
            session.execute(update(Run).where(Run.id == self.run_id).values(**values))  # type: ignore[arg-type]
            session.commit()
        self.commits += 1
        entries: dict[str, Entry] = {}
        for job in group:
            for key, entry in job.cache.items():
                entries[key] = {**entries[key], **entry} if key in entries else entry
        self.cache.set_many(entries)
