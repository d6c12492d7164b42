"""Which instructor mode fits which model: one table, matched by model-name prefix, first match wins.

``TOOLS`` (function calling) is the default: it works with OpenAI, most OpenAI-compatible servers
(vLLM, llama.cpp's server) and Mistral. Add a row here when a family needs something else.
"""

from __future__ import annotations

MODES: tuple[tuple[str, str], ...] = (
    ("anthropic/", "ANTHROPIC_TOOLS"),
    ("claude", "ANTHROPIC_TOOLS"),
    ("gemini/", "GEMINI_JSON"),
    ("vertex_ai/gemini", "GEMINI_JSON"),
    ("ollama/", "JSON"),
    ("ollama_chat/", "TOOLS"),
    ("bedrock/", "BEDROCK_TOOLS"),
    ("", "TOOLS"),
)


def mode_for(model: str) -> str:
    """Name of the ``instructor.Mode`` member to use for ``model``."""
    return next(mode for prefix, mode in MODES if model.startswith(prefix))
