"""The judgement cache: per conversation x dimension, keyed so that batching never changes a key.

The key hashes the grader's fingerprint, the dimension's definition (its hash in the rubric) and the
conversation's content hash, so: a second run costs no provider call; editing one dimension re-judges
that dimension only; and which conversations shared a batch is irrelevant.

An entry keeps the verdict and whether the grader saw the conversation truncated, so a hit is stored as
it was judged without reading the conversation again. Entries written before that was kept say nothing
about truncation (``truncated`` is None) and the runner works it out.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from judge.verdict import DimensionVerdict, LabelVerdict

LOOKUP_CHUNK = 500
"""Keys per SQL lookup: well under SQLite's limit on bound parameters."""


def cache_key(grader_fingerprint: str, dimension_hash: str, content_hash: str) -> str:
    return hashlib.sha256(f"{grader_fingerprint}|{dimension_hash}|{content_hash}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Cached:
    """A cached verdict and whether it was given on a truncated conversation (None: not recorded)."""

    verdict: DimensionVerdict
    truncated: bool | None = None


class VerdictCache(Protocol):
    def get_many(self, keys: Sequence[str]) -> dict[str, Cached]:
        """The entries found among ``keys``; a missing key is a miss."""
        ...

    def set_many(self, items: dict[str, Cached]) -> None: ...


def encode(entry: Cached) -> str:
    verdict = entry.verdict
    labels = [[item.label, item.evidence, item.reason] for item in verdict.labels]
    return json.dumps({"l": labels, "s": verdict.suggestion, "t": entry.truncated}, separators=(",", ":"))


def decode(raw: str | bytes) -> Cached:
    """Read an entry, in this format or the earlier one (a ``DimensionVerdict`` as JSON).

    Entries are built without validation: only this module writes them, from validated verdicts."""
    data: dict[str, Any] = json.loads(raw)
    if "l" not in data:
        return Cached(DimensionVerdict.model_validate(data), None)
    labels = [
        LabelVerdict.model_construct(label=label, evidence=evidence, reason=reason)
        for label, evidence, reason in data["l"]
    ]
    return Cached(DimensionVerdict.model_construct(labels=labels, suggestion=data["s"]), data["t"])


class DiskVerdictCache:
    """diskcache-backed: a SQLite file per folder, safe across processes, bounded by ``size_limit``."""

    def __init__(self, directory: Path, size_limit: int = 2**30) -> None:
        import diskcache

        self._cache = diskcache.Cache(str(directory), size_limit=size_limit)

    def get(self, key: str) -> Cached | None:
        raw = self._cache.get(key)
        return decode(raw) if isinstance(raw, (str, bytes)) else None

    def get_many(self, keys: Sequence[str]) -> dict[str, Cached]:
        """Look keys up hundreds at a time: one SQL query instead of one per key, which is what a run
        that is mostly hits (a re-run, a resumed run) spends its time on. Falls back to one ``get`` per
        key when the cache counts statistics or updates access times on reads."""
        if not keys:
            return {}
        if not self._fast_reads():
            return {key: entry for key in keys if (entry := self.get(key)) is not None}
        import time

        found: dict[str, Cached] = {}
        disk = self._cache._disk
        for start in range(0, len(keys), LOOKUP_CHUNK):
            part = keys[start : start + LOOKUP_CHUNK]
            marks = ",".join("?" * len(part))
            query = (
                "SELECT key, mode, filename, value FROM Cache"
                f" WHERE key IN ({marks}) AND raw = 1 AND (expire_time IS NULL OR expire_time > ?)"
            )
            for key, mode, filename, value in self._cache._sql(query, (*part, time.time())).fetchall():
                try:
                    raw = disk.fetch(mode, filename, value, False)
                except OSError:  # deleted between the query and the read: a miss
                    continue
                if isinstance(raw, (str, bytes)):
                    found[key] = decode(raw)
        return found

    def _fast_reads(self) -> bool:
        from diskcache.core import EVICTION_POLICY

        policy = EVICTION_POLICY.get(self._cache.eviction_policy, {})
        return not self._cache.statistics and policy.get("get") is None

    def set_many(self, items: dict[str, Cached]) -> None:
        """Store a batch's verdicts in one transaction (one fsync instead of one per key)."""
        if not items:
            return
        with self._cache.transact():
            for key, entry in items.items():
                self._cache.set(key, encode(entry))

    def close(self) -> None:
        self._cache.close()


class NoCache:
    """Used with ``--no-cache``: every lookup misses and nothing is kept."""

    def get_many(self, keys: Sequence[str]) -> dict[str, Cached]:
        return {}

    def set_many(self, items: dict[str, Cached]) -> None:
        return None
