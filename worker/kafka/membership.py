"""Knowing when this member may no longer own its partitions: the fence against acting as a zombie.

A worker cut off from the brokers keeps its partitions in its own view: aiokafka hears nothing (its heartbeat
waits for a coordinator it cannot reach, for up to ``request_timeout_ms``) and calls no rebalance callback
until the network heals. Meanwhile the group coordinator removes it ``session_timeout_ms`` after the last
heartbeat it *received*, and another member resumes the same follows. Without a fence both then poll the
same batches and publish for the same commands: the zombie that Kafka's system tests and Jepsen look for
(issue 29, scenario c, measured hundreds of provider requests from the cut-off worker after its removal).

The only proof a member has that it is still in the group is an answered heartbeat (or a completed join):
the coordinator cannot have removed it before ``sent + session timeout``, where ``sent`` is when that
heartbeat left. ``Membership`` keeps the latest such ``sent`` and says the partitions are *presumed lost* a
margin before that deadline, so the worker stops acting on them while they are still its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["Membership", "fence_after_s", "observe_heartbeats"]

log = logging.getLogger("worker.kafka.membership")


def fence_after_s(session_timeout_s: float) -> float:
    """How long without proof before the partitions are presumed lost: the session timeout less a margin
    (a fifth of it, at least one second) for noticing and for stopping the calls about to start."""
    return session_timeout_s - max(1.0, session_timeout_s / 5)


class Membership:
    """When this member last had proof of membership, on ``now``'s clock (monotonic seconds)."""

    def __init__(self, session_timeout_s: float, now: Callable[[], float] = time.monotonic) -> None:
        self.fence_after = fence_after_s(session_timeout_s)
        self._now = now
        self._proof = now()

    def proved(self, sent_at: float | None = None) -> None:
        """A heartbeat sent at ``sent_at`` was answered, or a join completed now (``None``)."""
        at = self._now() if sent_at is None else sent_at
        self._proof = max(self._proof, at)

    @property
    def age(self) -> float:
        return self._now() - self._proof

    def lapsed(self) -> bool:
        """No proof for ``fence_after`` seconds: the coordinator may remove this member any moment now."""
        return self.age > self.fence_after


def observe_heartbeats(consumer: object, membership: Membership) -> bool:
    """Make every answered heartbeat of ``consumer`` (a started ``AIOKafkaConsumer``) prove ``membership``.

    aiokafka has no public hook for heartbeats, so this wraps its group coordinator's ``_do_heartbeat``
    (present in every aiokafka release since 0.5; it returns True for an answered heartbeat). Returns False,
    changing nothing, when the consumer has no such coordinator (no group, or aiokafka changed); the caller
    then runs without the fence and says so.
    """
    coordinator = getattr(consumer, "_coordinator", None)
    beat: Callable[[], Awaitable[Any]] | None = getattr(coordinator, "_do_heartbeat", None)
    if coordinator is None or beat is None:
        return False

    async def observed() -> Any:
        sent = membership._now()
        answered = await beat()
        if answered is True:
            membership.proved(sent)
        return answered

    coordinator._do_heartbeat = observed
    return True
