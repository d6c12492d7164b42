"""Where the judge keeps its state, read once from the environment (overridable per command)."""

from __future__ import annotations

import os
from pathlib import Path

from judge.cache import DiskVerdictCache, NoCache, VerdictCache


def cache_dir() -> Path:
    return Path(os.environ.get("JUDGE_CACHE_DIR", ".judge-cache"))


def open_cache(enabled: bool = True, directory: Path | None = None) -> VerdictCache:
    return DiskVerdictCache(directory or cache_dir()) if enabled else NoCache()
