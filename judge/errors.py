"""The error hierarchy, split by fault.

``InputError`` is the user's fault (bad file, unknown label, unknown rubric): HTTP 4xx, exit code 2, a
message naming the field and the valid choices. ``ProviderError`` is a provider or runtime failure: it is
retried and, if it persists, the affected judgements are stored as unscored with its reason.
"""

from __future__ import annotations

from collections.abc import Iterable


class JudgeError(Exception):
    """Base of every error the judge raises on purpose."""


class InputError(JudgeError):
    """Something the user gave us is wrong; the message says what and where."""

    status_code = 422


class NotFoundError(InputError):
    """A named thing (rubric, prompt, grader, run, conversation) does not exist."""

    status_code = 404

    def __init__(self, kind: str, name: str, choices: Iterable[str] = ()) -> None:
        listed = sorted(choices)
        hint = f"; valid choices: {', '.join(listed)}" if listed else ""
        super().__init__(f"unknown {kind} {name!r}{hint}")
        self.kind, self.name, self.choices = kind, name, listed


class ConflictError(InputError):
    """The request conflicts with what is stored (a taken name, a run that already finished)."""

    status_code = 409


class AuthenticationError(InputError):
    """Missing or invalid API key."""

    status_code = 401


class TooLargeError(InputError):
    """A request carries more than the configured limit."""

    status_code = 413


class RubricError(InputError):
    """A rubric file does not validate; the message names the file, dimension and label."""


class ProviderError(JudgeError):
    """A provider call failed after its retries (network, rate limit, server error)."""


class InvalidReplyError(ProviderError):
    """The provider answered, but the answer does not fit the rubric's response model.

    ``reply`` carries what the failed exchange cost and said (a ``JudgeReply`` without verdicts), so the
    runner can store the request, the raw reply and the usage of a call that failed.
    """

    def __init__(self, message: str, reply: object = None) -> None:
        super().__init__(message)
        self.reply = reply
