"""Where built-in prompts, rubrics and sample data are found, installed or in a checkout.

In a wheel they sit in ``judge/_builtin/``; in a source checkout at the repository's top level. A team's
own folders (``JUDGE_RUBRICS_PATH`` / ``JUDGE_PROMPTS_PATH``, ``os.pathsep``-separated) come first and
shadow the built-in files by name.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def builtin_dir(kind: str) -> Path:
    """The built-in folder of ``kind`` ("prompts" or "rubrics")."""
    installed = PACKAGE_DIR / "_builtin" / kind
    return installed if installed.is_dir() else PACKAGE_DIR.parent / kind


def search_path(kind: str, extra: list[Path] | None = None) -> list[Path]:
    """Folders searched in order: explicit ones, then the environment variable's, then the built-in one."""
    variable = os.environ.get(f"JUDGE_{kind.upper()}_PATH", "")
    from_env = [Path(p) for p in variable.split(os.pathsep) if p]
    return [*(extra or []), *from_env, builtin_dir(kind)]


SAMPLE_CONVERSATIONS = PACKAGE_DIR / "data" / "sample_conversations.jsonl"
