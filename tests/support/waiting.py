"""Waiting on a condition with a deadline: the one way tests wait (never a bare sleep that hopes)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["until"]


async def until(predicate: Callable[[], object], timeout: float = 5.0, what: str = "condition") -> None:
    """Return once ``predicate()`` is true; fail the test if it is not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:.1f}s")
        await asyncio.sleep(0.005)
