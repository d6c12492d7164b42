"""Where built-in prompts, rubrics and sample data are found, installed or in a checkout.

In a wheel they sit in ``judge/_builtin/``; in a source checkout at the repository's top level. A team's
own folders (``JUDGE_RUBRICS_PATH`` / ``JUDGE_PROMPTS_PATH``, ``os.pathsep``-separated) come first and
shadow the built-in files by name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from judge.errors import InputError

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


def read_yaml(path: Path, error: type[InputError], name: str) -> Any:
    """The YAML document in a user's file; a missing file, or one that is not YAML, raises ``error``
    with a message that starts with ``name`` (the file as the user knows it)."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{name}: no such file") from None
    except (yaml.YAMLError, UnicodeDecodeError) as problem:
        raise error(f"{name}: not valid YAML: {problem}") from None
