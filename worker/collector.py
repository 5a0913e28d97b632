"""How often Python's cyclic garbage collector runs in the worker process.

CPython's default (a young-generation collection every 700 net allocations of container objects) suits
short scripts. A worker allocates a few hundred containers per command (models, dicts, futures, coroutine
frames), nearly all freed by reference counting within milliseconds; at the default, the collector runs
every few commands and walks every in-flight command's objects again each time, and those that survive
two collections end up in the older generations, which are walked less often but are much bigger. Measured
with ``python -m bench`` (docs/benchmarks.md, "Hot path"): a gen-0 threshold of 10,000 cut the worker's
CPU per command by about 16 %; 50,000 measured no better. Garbage cycles (exceptions with tracebacks,
mostly) are still collected, only in bigger, rarer sweeps, so memory stays bounded by the threshold.
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
