"""Process-wide settings that keep the judge offline.

Imported first by ``judge/__init__.py``: litellm fetches a model cost map at import time, tokenizers for
llama-family names retry a model hub, and tiktoken downloads encodings on first use. Each of these has
a local copy, and these variables point at it. ``setdefault`` keeps any value the user set.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path


def _litellm_tokenizers() -> Path | None:
    """Folder of the tiktoken encodings shipped inside litellm's wheel (found without importing it)."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "litellm_core_utils" / "tokenizers"
    return folder if folder.is_dir() else None


def configure() -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("LITELLM_TELEMETRY", "False")
    tokenizers = _litellm_tokenizers()
    if tokenizers is not None:
        os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(tokenizers))
