"""Waiting on a condition with a deadline: the one way tests wait (never a bare sleep that hopes).

``until`` for async tests, ``until_sync`` for the few that drive a synchronous tool (a Prometheus server).
``step`` is what happens between two checks: a short sleep by default, or the work that can make the
condition true (``EventLog.poll`` reads more events).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

__all__ = ["until", "until_sync"]


async def until(
    predicate: Callable[[], object],
    timeout: float = 5.0,
    what: str = "condition",
    *,
    step: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """Return once ``predicate()`` is true; fail the test if it is not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:.1f}s")
        await (step() if step is not None else asyncio.sleep(0.005))


def until_sync(predicate: Callable[[], object], timeout: float, what: str, *, interval: float = 0.5) -> None:
    """``until`` for synchronous code: check every ``interval`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:.1f}s")
        time.sleep(interval)
