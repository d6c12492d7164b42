"""judge: user analytics for conversational AI, built on LLM-as-judge.

The small public API; everything else is importable but not promised.
"""

from judge import offline

offline.configure()

from judge.conversation import Conversation, Message  # noqa: E402
from judge.rubric import Rubric, load_rubric  # noqa: E402
from judge.runner import RunOptions, RunSummary, run_once  # noqa: E402

__all__ = ["Conversation", "Message", "Rubric", "RunOptions", "RunSummary", "load_rubric", "run_once"]
__version__ = "0.1.0"
