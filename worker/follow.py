"""Cancel one batch and follow it to a terminal state, reporting to every command that asked.

One ``BatchWatch`` exists per batch (provider, account, batch id) in a process. Commands naming the same
batch subscribe to it instead of each cancelling and polling on their own: the provider sees one cancel
and one poll stream however many times a budget guard fires. Each subscriber still gets its own events
(its ``command_id``, its own ``previous_status``) and exactly one final event, delivered through the
``publish`` callback; this module knows nothing of Kafka.

Polling is adaptive: fast while the batch is changing (a cancel usually settles in seconds), backing off
geometrically to ``max_interval`` while it sits in ``cancelling`` (OpenAI allows up to ten minutes), so
thousands of slow batches cost a few requests per second instead of thousands.

Poll results are not spans of their own: a follow can last hours, and a span per poll would bury the
trace. The provider client records each HTTP attempt as a short span; status changes become events.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from worker.contract import (
    BatchSnapshot,
    BatchStateEvent,
    BatchStatus,
    CancelCommand,
    FailureDetail,
    Outcome,
    failure_event,
    state_event,
)
from worker.errors import GaveUp, Rejected

__all__ = ["BatchWatch", "FollowPolicy", "Subscriber", "WatchEnded", "command_failure", "next_interval"]

log = logging.getLogger("worker.follow")


class Provider(Protocol):
    """What following needs from a provider client (``worker.providers.ProviderClient`` in production)."""

    async def cancel(self, account: str, batch_id: str) -> Any: ...
    async def retrieve(self, account: str, batch_id: str) -> BatchSnapshot: ...


@dataclass(frozen=True)
class FollowPolicy:
    initial_interval: float = 1.0
    max_interval: float = 30.0
    backoff: float = 1.5
    max_follow: float = 24 * 3600.0


def next_interval(current: float, changed: bool, policy: FollowPolicy) -> float:
    """Back to the fast interval after a change, otherwise a little slower, never above the cap."""
    if changed:
        return policy.initial_interval
    return min(current * policy.backoff, policy.max_interval)


@dataclass(eq=False)
class Subscriber:
    """One command waiting on a batch: its own deadline, its own last status, its own final event."""

    command: CancelCommand
    context: Any = None  # the command's trace context, handed back to ``publish``
    deadline: float = float("inf")
    last_status: BatchStatus | None = None
    finished: asyncio.Future[BatchStateEvent] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    # A late joiner is reported to from its own task while the watch task may report to it too: one
    # publication per subscriber at a time, so it can never get two final events.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def done(self) -> bool:
        return self.finished.done()


Publish = Callable[[Subscriber, BatchStateEvent], Awaitable[None]]


def command_failure(
    command: CancelCommand, outcome: Outcome, detail: FailureDetail, *, last_status: BatchStatus | None = None
) -> BatchStateEvent:
    """The final failure event of a decoded command (rejected, gave up)."""
    return failure_event(
        command_id=command.command_id,
        outcome=outcome,
        detail=detail,
        provider=command.provider,
        account=command.account,
        batch_id=command.batch_id,
        last_status=last_status,
    )


class WatchEnded(Exception):
    """The watch stopped (cancelled, or a bug) before this subscriber's final event."""


class BatchWatch:
    """The single cancel + follow of one batch, broadcasting to its subscribers until none is left."""

    def __init__(self, provider: Provider, account: str, batch_id: str, publish: Publish, policy: FollowPolicy):
        self._provider = provider
        self._account = account
        self._batch_id = batch_id
        self._publish = publish
        self._policy = policy
        self._subscribers: list[Subscriber] = []
        self._snapshot: BatchSnapshot | None = None
        self._already_terminal = False
        self.task: asyncio.Task[None] | None = None

    @property
    def idle(self) -> bool:
        return not any(not s.done for s in self._subscribers)

    async def subscribe(self, sub: Subscriber) -> None:
        """Join; a late subscriber first hears the state already known, then follows along."""
        self._subscribers.append(sub)
        if self._snapshot is not None:
            await self._report(sub, self._snapshot)

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub in self._subscribers:
            self._subscribers.remove(sub)

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            for sub in self._subscribers:  # still waiting: tell them, so they follow again instead of hanging
                if not sub.done:
                    sub.finished.set_exception(WatchEnded(self._batch_id))

    async def _run(self) -> None:
        try:
            await self._cancel_then_follow()
        except asyncio.CancelledError:
            raise
        except Rejected as exc:
            await self._fail_all(
                Outcome.REJECTED, FailureDetail(http_status=exc.http_status, code=exc.code, message=exc.message)
            )
        except GaveUp as exc:
            await self._fail_all(
                Outcome.GAVE_UP, FailureDetail(http_status=None, code="retries_exhausted", message=exc.cause)
            )
        except Exception as exc:
            log.exception("following %s failed unexpectedly", self._batch_id)
            detail = FailureDetail(
                http_status=None, code="internal_error", message=f"{type(exc).__name__}: {exc}"[:500]
            )
            await self._fail_all(Outcome.GAVE_UP, detail)

    async def _cancel_then_follow(self) -> None:
        result = await self._provider.cancel(self._account, self._batch_id)
        self._already_terminal = bool(result.already_terminal)
        await self._observe(result.snapshot)
        interval = self._policy.initial_interval
        while not self._everyone_done():
            await self._expire_subscribers()
            if self._everyone_done():
                return
            await self._sleep(interval)
            snapshot = await self._provider.retrieve(self._account, self._batch_id)
            changed = self._snapshot is None or snapshot.status != self._snapshot.status
            await self._observe(snapshot)
            interval = next_interval(interval, changed, self._policy)

    async def _sleep(self, interval: float) -> None:
        """Sleep, but no later than the nearest subscriber deadline."""
        nearest = min((s.deadline for s in self._subscribers if not s.done), default=float("inf"))
        await asyncio.sleep(max(0.0, min(interval, nearest - time.monotonic())))

    def _everyone_done(self) -> bool:
        return all(s.done for s in self._subscribers)

    async def _observe(self, snapshot: BatchSnapshot) -> None:
        self._snapshot = snapshot
        for sub in list(self._subscribers):
            if not sub.done:
                await self._report(sub, snapshot)

    async def _report(self, sub: Subscriber, snapshot: BatchSnapshot) -> None:
        """Publish to one subscriber what is new to it; finish it on a terminal state or when it did not follow."""
        final = snapshot.terminal or not sub.command.follow
        async with sub.lock:
            if sub.done or (snapshot.status == sub.last_status and not final):
                return
            event = state_event(
                sub.command, snapshot, sub.last_status, final=final, already_terminal=self._already_terminal
            )
            await self._publish(sub, event)
            sub.last_status = snapshot.status
            if final and not sub.done:
                sub.finished.set_result(event)

    async def _expire_subscribers(self) -> None:
        now = time.monotonic()
        for sub in list(self._subscribers):
            if not sub.done and now >= sub.deadline:
                status = sub.last_status.value if sub.last_status else "unknown"
                detail = FailureDetail(
                    http_status=None, code="follow_timeout", message=f"batch still {status} when following timed out"
                )
                await self._fail(sub, Outcome.GAVE_UP, detail)

    async def _fail_all(self, outcome: Outcome, detail: FailureDetail) -> None:
        for sub in list(self._subscribers):
            if not sub.done:
                await self._fail(sub, outcome, detail)

    async def _fail(self, sub: Subscriber, outcome: Outcome, detail: FailureDetail) -> None:
        cmd = sub.command
        async with sub.lock:
            if sub.done:
                return
            event = command_failure(cmd, outcome, detail, last_status=sub.last_status)
            await self._publish(sub, event)
            if not sub.done:
                sub.finished.set_result(event)
