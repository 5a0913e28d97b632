"""How often Python's cyclic garbage collector runs in the worker process.

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

import gc

__all__ = ["DEFAULT_GEN0_THRESHOLD", "tune"]

#: ``BCW_GC_GEN0_THRESHOLD``'s default; CPython's own is 700.
DEFAULT_GEN0_THRESHOLD = 10_000


def tune(gen0_threshold: int = DEFAULT_GEN0_THRESHOLD) -> None:
    """Collect the young generation every ``gen0_threshold`` net allocations; the older ones keep their ratios."""
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, gen1, gen2)
