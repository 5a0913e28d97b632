"""Which event loop the worker runs on: asyncio's own by default, uvloop only when asked for.

uvloop measured within a few percent of asyncio's loop per command (docs/benchmarks.md, "Hot path"), but
aiokafka is not safe on it: a write to a connection the peer has just reset raises ``RuntimeError`` on uvloop
(nothing, or an ``OSError``, on asyncio's loop), which aiokafka does not catch (aio-libs/aiokafka#1038, open).
The producer's sender task and the consumer's fetcher task die of it, and every later send fails with
"Unexpected error during batch delivery" for the rest of the process's life: issue 29's scenario d (resets
between the workers and the brokers) found a worker stuck so. ``auto`` therefore means asyncio's loop;
``BCW_EVENT_LOOP=uvloop`` still chooses uvloop, for whoever measures it worth the risk.
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
    """The factory of the loop ``choice`` names; ``auto`` is asyncio's (see the module's docstring)."""
    if choice in ("asyncio", "auto"):
        return asyncio.new_event_loop
    if importlib.util.find_spec("uvloop") is None:
        raise ConfigError("BCW_EVENT_LOOP=uvloop, but uvloop is not installed (pip install uvloop, or use asyncio)")
    import uvloop

    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], choice: EventLoop = "auto") -> T:
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(main)
