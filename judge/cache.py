"""The judgement cache: one entry per grader and conversation content, holding a verdict per dimension.

An entry is found by the grader's fingerprint and the conversation's content hash; inside it, each
verdict is filed under its dimension's definition (the dimension's hash in the rubric). So a second run
costs no provider call; editing one dimension re-judges that dimension only (the others are still in the
entry); and which conversations shared a batch is irrelevant. A re-run reads one entry per conversation,
not one per conversation and dimension: that read is most of what a re-run costs.

Each verdict keeps whether the grader saw the conversation truncated, so a hit is stored as it was
judged without reading the conversation again. Entries written by two runs at once for the same
conversation keep the last one's verdicts: what the other added is judged again later, never wrong.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from judge.verdict import LabelRow, StoredVerdict, Verdict

FORMAT = "v2"
"""Part of every key: entries of an earlier layout are never read (they are misses)."""
LOOKUP_CHUNK = 500
"""Keys per SQL lookup: well under SQLite's limit on bound parameters."""


def cache_key(grader_fingerprint: str, content_hash: str) -> str:
    return hashlib.sha256(f"{FORMAT}|{grader_fingerprint}|{content_hash}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Judged:
    """A cached verdict and whether it was given on a truncated conversation."""

    verdict: Verdict
    truncated: bool


Entry = dict[str, Judged]
"""Dimension hash -> what the grader said on that dimension, for one conversation."""


class VerdictCache(Protocol):
    def get_many(self, keys: Sequence[str]) -> dict[str, Entry]:
        """The entries found among ``keys``; a missing key is a miss."""
        ...

    def set_many(self, items: dict[str, Entry]) -> None:
        """Store whole entries (a conversation's earlier verdicts merged with its new ones)."""
        ...


def encode(entry: Entry) -> str:
    data = {
        dimension: [
            [[item.label, item.evidence, item.reason] for item in judged.verdict.labels],
            judged.verdict.suggestion,
            judged.truncated,
        ]
        for dimension, judged in entry.items()
    }
    return json.dumps(data, separators=(",", ":"))


def decode(raw: str | bytes) -> Entry:
    """Read an entry; verdicts come back as ``StoredVerdict`` (only this module writes them, from
    validated verdicts)."""
    data: dict[str, Any] = json.loads(raw)
    return {
        dimension: Judged(StoredVerdict([LabelRow(*item) for item in labels], suggestion), bool(truncated))
        for dimension, (labels, suggestion, truncated) in data.items()
    }


class DiskVerdictCache:
    """diskcache-backed: a SQLite file per folder, safe across processes, bounded by ``size_limit``."""

    def __init__(self, directory: Path, size_limit: int = 2**30) -> None:
        import diskcache

        self._cache = diskcache.Cache(str(directory), size_limit=size_limit)

    def get(self, key: str) -> Entry | None:
        raw = self._cache.get(key)
        return decode(raw) if isinstance(raw, (str, bytes)) else None

    def get_many(self, keys: Sequence[str]) -> dict[str, Entry]:
        """Look keys up hundreds at a time: one SQL query instead of one per key. Falls back to one
        ``get`` per key when the cache counts statistics or updates access times on reads."""
        if not keys:
            return {}
        if not self._fast_reads():
            return {key: entry for key in keys if (entry := self.get(key)) is not None}
        found: dict[str, Entry] = {}
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

    def set_many(self, items: dict[str, Entry]) -> None:
        """Store entries in one transaction (one fsync instead of one per key)."""
        if not items:
            return
        with self._cache.transact():
            for key, entry in items.items():
                self._cache.set(key, encode(entry))

    def close(self) -> None:
        self._cache.close()


class NoCache:
    """Used with ``--no-cache``: every lookup misses and nothing is kept."""

    def get_many(self, keys: Sequence[str]) -> dict[str, Entry]:
        return {}

    def set_many(self, items: dict[str, Entry]) -> None:
        return None
