"""Comparisons executing in the background of a server: one thread, event loop and session each, like
runs (``judge.background``). A comparison left ``running`` by a stopped server is marked ``interrupted``
at the next start; starting it again costs little, as its graders' verdicts are in the cache."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

from sqlmodel import Session, col, update

from judge import compare, compare_report
from judge.errors import ConflictError
from judge.settings import open_cache
from judge.store.db import engine
from judge.store.gold_tables import Comparison

log = logging.getLogger(__name__)


class ComparisonManager:
    def __init__(self, database_url: str, cache_dir: Path | None = None) -> None:
        self.database_url = database_url
        self.cache_dir = cache_dir
        self._threads: dict[int, threading.Thread] = {}
        self._lock = threading.Lock()

    def mark_interrupted(self) -> int:
        """Mark comparisons left ``running`` by a previous process as ``interrupted``; returns how many."""
        with Session(engine(self.database_url)) as session:
            result = session.exec(
                update(Comparison)
                .where(col(Comparison.status) == "running")
                .values(status="interrupted", error="server stopped during the comparison")
            )
            session.commit()
            return int(result.rowcount or 0)

    def launch(self, comparison_id: int) -> None:
        with self._lock:
            if comparison_id in self._threads:
                raise ConflictError(f"comparison {comparison_id} is already executing")
            thread = threading.Thread(
                target=self._work, args=(comparison_id,), name=f"comparison-{comparison_id}", daemon=True
            )
            self._threads[comparison_id] = thread
        thread.start()

    def _work(self, comparison_id: int) -> None:
        try:
            with Session(engine(self.database_url), expire_on_commit=False) as session:
                found = session.get(Comparison, comparison_id)
                assert found is not None
                asyncio.run(
                    compare.execute(
                        session, found, open_cache(True, self.cache_dir), render=compare_report.html
                    )
                )
        except Exception:
            log.exception("comparison %s failed", comparison_id)  # its row says failed, with the reason
        finally:
            with self._lock:
                self._threads.pop(comparison_id, None)

    def is_active(self, comparison_id: int) -> bool:
        return comparison_id in self._threads

    def wait(self, timeout: float = 60.0) -> None:
        """Wait for every background comparison to end (at shutdown and in tests)."""
        for thread in list(self._threads.values()):
            thread.join(timeout)
