"""The judgement cache: per conversation x dimension, keyed so that batching never changes a key.

The key hashes the grader's fingerprint, the dimension's definition (its hash in the rubric) and the
conversation's content hash, so: a second run costs no provider call; editing one dimension re-judges
that dimension only; and which conversations shared a batch is irrelevant.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol

from judge.verdict import DimensionVerdict


def cache_key(grader_fingerprint: str, dimension_hash: str, content_hash: str) -> str:
    return hashlib.sha256(f"{grader_fingerprint}|{dimension_hash}|{content_hash}".encode()).hexdigest()


class VerdictCache(Protocol):
    def get(self, key: str) -> DimensionVerdict | None: ...

    def set_many(self, items: dict[str, DimensionVerdict]) -> None: ...


class DiskVerdictCache:
    """diskcache-backed: a SQLite file per folder, safe across processes, bounded by ``size_limit``."""

    def __init__(self, directory: Path, size_limit: int = 2**30) -> None:
        import diskcache

        self._cache = diskcache.Cache(str(directory), size_limit=size_limit)

    def get(self, key: str) -> DimensionVerdict | None:
        raw = self._cache.get(key)
        return DimensionVerdict.model_validate_json(raw) if isinstance(raw, (str, bytes)) else None

    def set_many(self, items: dict[str, DimensionVerdict]) -> None:
        """Store a batch's verdicts in one transaction (one fsync instead of one per key)."""
        with self._cache.transact():
            for key, verdict in items.items():
                self._cache.set(key, verdict.model_dump_json())

    def close(self) -> None:
        self._cache.close()


class NoCache:
    """Used with ``--no-cache``: every lookup misses and nothing is kept."""

    def get(self, key: str) -> DimensionVerdict | None:
        return None

    def set_many(self, items: dict[str, DimensionVerdict]) -> None:
        return None
