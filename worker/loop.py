"""Which event loop the worker runs on: uvloop when it is installed (the default), asyncio's own otherwise.

Measured with ``python -m bench`` (docs/benchmarks.md, "Hot path"): within a few percent of asyncio's loop
per command, never worse, because most of a command's CPU is Python code above the loop (httpx, aiokafka,
pydantic). Nothing in the worker depends on the loop it runs on: the unit tests run on asyncio's, every
worker process of the e2e and reliability suites on the default, and ``BCW_EVENT_LOOP=asyncio`` is the way
back if a platform lacks uvloop or a bug is suspected in it.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from worker.config import ConfigError, EventLoop

__all__ = ["loop_factory", "run"]

T = TypeVar("T")


def loop_factory(choice: EventLoop) -> Callable[[], asyncio.AbstractEventLoop]:
    """The factory of the loop ``choice`` names; ``auto`` is uvloop when it can be imported."""
    installed = importlib.util.find_spec("uvloop") is not None
    if choice == "asyncio" or (choice == "auto" and not installed):
        return asyncio.new_event_loop
    if not installed:
        raise ConfigError("BCW_EVENT_LOOP=uvloop, but uvloop is not installed (pip install uvloop, or use auto)")
    import uvloop

    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], choice: EventLoop = "auto") -> T:
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(main)
