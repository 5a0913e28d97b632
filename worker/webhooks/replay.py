"""Deliveries already turned into signals, remembered for as long as a replay could pass the timestamp check.

Providers deliver at least once, and a delivery captured on the way could be sent again. A Standard Webhooks
delivery older than the tolerance is refused as stale anyway, so remembering each ``webhook-id`` for twice the
tolerance catches every replay that could still verify, and the memory stays bounded by the delivery rate.
An id is remembered only once its signal is durable: a delivery answered 503 is retried and must not count as
seen. Each receiver replica remembers its own; a replay that reaches another replica makes one more signal,
which costs one poll (a signal never decides an outcome).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["SeenDeliveries"]


class SeenDeliveries:
    """Delivery ids with their time, oldest first; forgotten after ``window_s`` or beyond ``limit`` entries."""

    def __init__(self, window_s: float, limit: int = 200_000, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._window = window_s
        self._limit = limit
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    def __contains__(self, delivery_id: str) -> bool:
        self._forget_old()
        return delivery_id in self._seen

    def __len__(self) -> int:
        return len(self._seen)

    def remember(self, delivery_id: str) -> None:
        self._seen[delivery_id] = self._clock()
        self._seen.move_to_end(delivery_id)
        self._forget_old()

    def _forget_old(self) -> None:
        oldest = self._clock() - self._window
        while self._seen and (len(self._seen) > self._limit or next(iter(self._seen.values())) < oldest):
            self._seen.popitem(last=False)
