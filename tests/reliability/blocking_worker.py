"""The real worker with one deliberate fault, for the negative control (scenario 7). Never used in production.

``python -m tests.reliability.blocking_worker`` runs ``worker run`` after patching
``CommandConsumer._poll_once``: the first time the poll loop sees finished-but-uncommitted work it blocks
the whole event loop with ``time.sleep(RELIABILITY_BLOCK_S)`` — longer than ``max_poll_interval_ms`` and
``session_timeout_ms`` — like a long GC pause or a synchronous call in the loop. No heartbeat, no commit
runs meanwhile, so the group evicts the member and redelivers its uncommitted work. The checker must see
that redelivery; if it did not, the other scenarios' "no duplicates" would prove nothing.

The membership fence (``worker/kafka/membership.py``, issue 29) is switched off here: it exists to stop exactly
this evicted member from acting on, and with it the duplicates the checker must prove it can see never happen
(issue 29's scenario c shows the fence at work; this control shows the checker at work).
"""

from __future__ import annotations

import logging
import os
import time

from worker.kafka.consumer import CommandConsumer

log = logging.getLogger("tests.reliability.blocking_worker")
_original = CommandConsumer._poll_once
_blocked = False


async def _poll_once(self: CommandConsumer) -> None:
    global _blocked  # noqa: PLW0603 - once per process, on purpose
    if not _blocked and any(p.to_commit() is not None for p in self._partitions.values()):
        _blocked = True
        seconds = float(os.environ.get("RELIABILITY_BLOCK_S", "15"))
        log.warning("BLOCKING the event loop for %.1fs with finished work uncommitted", seconds)
        time.sleep(seconds)  # noqa: ASYNC251 - the fault under test
        log.warning("UNBLOCKED")
    await _original(self)


async def _no_fence(self: CommandConsumer, stop: object) -> None:
    return None


CommandConsumer._poll_once = _poll_once  # type: ignore[method-assign]
CommandConsumer._fence_loop = _no_fence  # type: ignore[method-assign]

if __name__ == "__main__":
    from worker.cli import main

    raise SystemExit(main(["run"]))
