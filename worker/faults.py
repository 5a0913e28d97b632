"""Named moments in a follow's life where a crash changes what the next owner must do.

Production never sets ``reached`` to anything but the no-op below. The reliability suite's crashing
worker (``tests/reliability/crashing_worker.py``) replaces it to SIGKILL the process at one of these
moments, so that each crash window listed in docs/durable-follows.md is proven, not assumed:

* ``cancel_accepted``: the provider took the cancel; no state says so yet.
* ``state_written``: a follow-state record is durable; the offsets it released are not committed yet.
* ``event_published``: a state event is out; the state recording that it was told is not.
* ``final_published``: a command's final event is out; its removal from the state (or the tombstone) is not.
* ``child_published``: a selector's child cancel command is acknowledged; the selector's offset is not committed.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["reached"]


def _nothing(point: str) -> None:
    return None


reached: Callable[[str], None] = _nothing
