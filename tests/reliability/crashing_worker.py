"""The real worker, SIGKILLed by itself at one named crash window (``worker.faults``). Never used in production.

``python -m tests.reliability.crashing_worker`` runs ``worker run`` after pointing ``worker.faults.reached``
at a function that kills the process, with SIGKILL and no clean-up, the ``RELIABILITY_CRASH_AFTER``-th time
the follow reaches ``RELIABILITY_CRASH_AT`` (``cancel_accepted``, ``state_written``, ``event_published`` or
``final_published``). So each window of docs/durable-follows.md is hit exactly, not by a lucky timer.
"""

from __future__ import annotations

import logging
import os
import signal

from worker import faults

log = logging.getLogger("tests.reliability.crashing_worker")
POINT = os.environ["RELIABILITY_CRASH_AT"]
AFTER = int(os.environ.get("RELIABILITY_CRASH_AFTER", "1"))
_seen = 0


def _crash_at(point: str) -> None:
    global _seen  # noqa: PLW0603 - one counter per process, on purpose
    if point != POINT:
        return
    _seen += 1
    if _seen >= AFTER:
        log.warning("CRASHING at %s (occurrence %d)", point, _seen)
        os.kill(os.getpid(), signal.SIGKILL)


faults.reached = _crash_at

if __name__ == "__main__":
    from worker.cli import main

    raise SystemExit(main(["run"]))
