"""Runs executing in the background of a server process: one thread, event loop and session each.

A run row is created (and its options validated) by the caller; the thread then executes it through
``Runner.resume``, the same path that continues a run interrupted by a restart. Runs still marked
``running`` when a server starts were interrupted: ``mark_interrupted`` says so, and ``resume`` picks
them up without re-judging what they stored.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from sqlmodel import Session, col, update

from judge.errors import ConflictError, NotFoundError
from judge.settings import open_cache
from judge.store.db import engine
from judge.store.tables import Run

log = logging.getLogger(__name__)


@dataclass
class _Active:
    thread: threading.Thread
    loop: asyncio.AbstractEventLoop | None = None
    task: asyncio.Task[object] | None = None
    cancel_requested: bool = False


class RunManager:
    def __init__(self, database_url: str, cache_dir: Path | None = None) -> None:
        self.database_url = database_url
        self.cache_dir = cache_dir
        self._active: dict[int, _Active] = {}
        self._lock = threading.Lock()

    def mark_interrupted(self) -> int:
        """Mark runs left ``running`` by a previous process as ``interrupted``; returns how many."""
        with Session(engine(self.database_url)) as session:
            result = session.exec(
                update(Run)
                .where(col(Run.status) == "running")
                .values(status="interrupted", error="server stopped during the run")
            )
            session.commit()
            return int(result.rowcount or 0)

    def launch(self, run_id: int) -> None:
        """Execute (or continue) ``run_id`` in a background thread."""
        with self._lock:
            if run_id in self._active:
                raise ConflictError(f"run {run_id} is already executing")
            thread = threading.Thread(target=self._work, args=(run_id,), name=f"run-{run_id}", daemon=True)
            self._active[run_id] = _Active(thread)
        thread.start()

    def resume(self, session: Session, run: Run) -> None:
        if run.status in {"running", "completed"} or run.id in self._active:
            raise ConflictError(
                f"run {run.id} is {run.status}; only interrupted, cancelled or failed runs resume"
            )
        assert run.id is not None
        run.status = "running"
        session.add(run)
        session.commit()
        self.launch(run.id)

    def cancel(self, session: Session, run: Run) -> None:
        assert run.id is not None
        with self._lock:
            active = self._active.get(run.id)
            if active is None:
                if run.status != "running":
                    raise ConflictError(f"run {run.id} is {run.status}, not running")
                run.status = "cancelled"
                session.add(run)
                session.commit()
                return
            active.cancel_requested = True
            if active.loop is not None and active.task is not None:
                active.loop.call_soon_threadsafe(active.task.cancel)

    def is_active(self, run_id: int) -> bool:
        return run_id in self._active

    def _work(self, run_id: int) -> None:
        from judge.runner import Runner

        loop = asyncio.new_event_loop()
        try:
            with Session(engine(self.database_url), expire_on_commit=False) as session:
                run = session.get(Run, run_id)
                assert run is not None
                runner = Runner.resume(session, run, cache=open_cache(True, self.cache_dir))
                task = loop.create_task(runner.execute(run))
                with self._lock:
                    active = self._active[run_id]
                    active.loop, active.task = loop, task
                    if active.cancel_requested:
                        task.cancel()
                try:
                    loop.run_until_complete(task)
                except asyncio.CancelledError:
                    log.info("run %s cancelled", run_id)
        except Exception:
            log.exception("run %s failed", run_id)
            self._mark_failed(run_id)
        finally:
            loop.close()
            with self._lock:
                self._active.pop(run_id, None)

    def _mark_failed(self, run_id: int) -> None:
        with Session(engine(self.database_url)) as session:
            run = session.get(Run, run_id)
            if run is not None and run.status == "running":
                run.status, run.error = "failed", "the run could not start; see the server log"
                session.add(run)
                session.commit()

    def wait(self, timeout: float = 30.0) -> None:
        """Wait for every background run to end (used at shutdown and in tests)."""
        for active in list(self._active.values()):
            active.thread.join(timeout)

    def shutdown(self) -> None:
        for run_id in list(self._active):
            active = self._active.get(run_id)
            if active and active.loop and active.task:
                active.loop.call_soon_threadsafe(active.task.cancel)
        self.wait(10.0)


def require_run(session: Session, project_id: int, run_id: int) -> Run:
    run = session.get(Run, run_id)
    if run is None or run.project_id != project_id:
        raise NotFoundError("run", str(run_id))
    return run
