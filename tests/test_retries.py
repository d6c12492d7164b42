"""Retrying provider calls: transient failures are retried, a rate limit for longer, others not at all."""

from __future__ import annotations

import asyncio

import pytest

from judge.providers.retries import RATE_LIMIT_ATTEMPTS, retrying


class _StatusError(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


def _tries(failures: int, status: int, attempts: int = 6) -> int:
    """Tries made by a call that fails ``failures`` times with ``status``, then succeeds (or re-raises)."""
    made = 0

    async def call() -> int:
        nonlocal made
        async for attempt in retrying(attempts, initial=0.0, maximum=0.0):
            with attempt:
                made += 1
                if made <= failures:
                    raise _StatusError(status)
        return made

    return asyncio.run(call())


def test_a_rate_limited_call_is_tried_well_past_the_attempts_for_other_failures():
    assert _tries(10, 429) == 11
    with pytest.raises(_StatusError):
        _tries(RATE_LIMIT_ATTEMPTS, 429)


def test_a_server_error_is_tried_up_to_the_attempts_then_raised():
    assert _tries(5, 500) == 6
    with pytest.raises(_StatusError):
        _tries(6, 500)


def test_a_client_error_is_not_retried():
    with pytest.raises(_StatusError):
        _tries(1, 400)
