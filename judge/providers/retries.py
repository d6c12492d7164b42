"""Retrying transient provider failures: 408/409/429/5xx, timeouts and dropped connections.

Backoff is exponential with jitter, but a server's ``Retry-After`` header, when given, is honoured.
"""

from __future__ import annotations

from typing import Any

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_random_exponential

TRANSIENT_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
TRANSIENT_NAMES = frozenset({"Timeout", "APIConnectionError", "APITimeoutError", "ServiceUnavailableError"})
MAX_RETRY_AFTER = 60.0


def is_transient(error: BaseException | None) -> bool:
    if error is None:
        return False
    if getattr(error, "status_code", None) in TRANSIENT_STATUS:
        return True
    return any(cls.__name__ in TRANSIENT_NAMES for cls in type(error).__mro__)


def retry_after(error: BaseException | None) -> float | None:
    """Seconds the server asked us to wait, from the ``Retry-After`` header of the failed response."""
    response = getattr(error, "response", None)
    headers: Any = getattr(response, "headers", None) or getattr(error, "litellm_response_headers", None)
    if not headers:
        return None
    value = headers.get("retry-after")
    try:
        return min(float(value), MAX_RETRY_AFTER) if value is not None else None
    except ValueError:
        return None


class _Wait:
    def __init__(self, initial: float, maximum: float) -> None:
        self.backoff = wait_random_exponential(multiplier=initial, max=maximum)

    def __call__(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        asked = retry_after(error)
        return asked if asked is not None else float(self.backoff(state))


RATE_LIMIT_ATTEMPTS = 20
"""Tries of a call the provider keeps answering 429: a rate limit says "later", not "never". At a 20% rate
of 429s, six tries left one batch in 64 thousand unscored, enough to lose one in a run of a few hundred
calls now and then; twenty leave one in 10^14."""


def is_rate_limited(error: BaseException | None) -> bool:
    return getattr(error, "status_code", None) == 429


class _Stop:
    """Stop after ``attempts`` tries, or ``RATE_LIMIT_ATTEMPTS`` while the provider answers 429."""

    def __init__(self, attempts: int) -> None:
        self.others = stop_after_attempt(attempts)
        self.rate_limited = stop_after_attempt(max(attempts, RATE_LIMIT_ATTEMPTS))

    def __call__(self, state: RetryCallState) -> bool:
        error = state.outcome.exception() if state.outcome else None
        return bool((self.rate_limited if is_rate_limited(error) else self.others)(state))


def retrying(attempts: int = 6, initial: float = 0.5, maximum: float = 30.0) -> AsyncRetrying:
    """An ``async for attempt in retrying(): with attempt: ...`` loop for one provider call."""
    return AsyncRetrying(
        stop=_Stop(attempts),
        wait=_Wait(initial, maximum),
        retry=retry_if_exception(is_transient),
        reraise=True,
    )
