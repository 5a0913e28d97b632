"""How the worker process runs: its event loop, and how often Python's garbage collector walks the heap.

The event loop: asyncio's own by default, uvloop only when asked for.

uvloop measured within a few percent of asyncio's loop per command (docs/benchmarks.md, "Hot path"), but
aiokafka is not safe on it: a write to a connection the peer has just reset raises ``RuntimeError`` on uvloop
(nothing, or an ``OSError``, on asyncio's loop), which aiokafka does not catch (aio-libs/aiokafka#1038, open).
The producer's sender task and the consumer's fetcher task die of it, and every later send fails with
"Unexpected error during batch delivery" for the rest of the process's life: issue 29's scenario d (resets
between the workers and the brokers) found a worker stuck so. ``auto`` therefore means asyncio's loop;
``BCW_EVENT_LOOP=uvloop`` still chooses uvloop, for whoever measures it worth the risk.

The collector: how often Python's cyclic garbage collector runs (``BCW_GC_GEN0_THRESHOLD``).

CPython's default (a young-generation collection every 700 net allocations of container objects) suits
short scripts. A worker allocates a few hundred containers per command (models, dicts, futures, coroutine
frames), nearly all freed by reference counting within milliseconds. At the default the collector runs
every few commands and walks every in-flight command's objects each time; those that survive two
collections end up in the oldest generation, whose full sweeps walk the whole heap. Measured with
``gc.callbacks`` in one worker process over 20,000 commands (docs/benchmarks.md, "Hot path"):

=========  ==========================  ==========================  =============================
gen 0      collections (gen 0/1/2)      CPU in the collector         pause of a gen-0 collection
=========  ==========================  ==========================  =============================
700        3,800 / 340 / 28             6.0 s (~300 µs per command)  < 1 ms; a full sweep ~120 ms
10,000     120 / 11 / 1                 1.4 s (~70 µs per command)   ~9 ms
50,000     20 / 2 / 0                   0.6-1.1 s                    25-45 ms
=========  ==========================  ==========================  =============================

10,000 keeps most of the gain with pauses well inside the latency targets. Garbage cycles (exceptions
with tracebacks, mostly) are still collected, only in bigger, rarer sweeps, so memory stays bounded.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from worker.config import DEFAULT_GEN0_THRESHOLD, ConfigError, EventLoop

__all__ = ["loop_factory", "run", "tune_collector"]

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


def tune_collector(gen0_threshold: int = DEFAULT_GEN0_THRESHOLD) -> None:
    """Collect the young generation every ``gen0_threshold`` net allocations; the older ones keep their ratios."""
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, gen1, gen2)
