"""What a follow works with, as small protocols, and the one object that holds them for many follows.

Every follow of one (commands partition, provider, account) shares the same provider client, scheduler,
state writers and owner; ``FollowServices`` holds them once, so a follow keeps one reference instead of
seven (a process holds up to 100,000 follows). ``Follows`` (registry.py) builds one per triple.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from worker.budget import Priority
from worker.contract import BatchSnapshot, BatchStateEvent, FollowState
from worker.follow.policy import FollowPolicy
from worker.follow.subscriber import Subscriber

if TYPE_CHECKING:
    from worker.follow.durable import Durable
    from worker.follow.follow import Follow

__all__ = ["CancelAnswer", "FollowServices", "Owner", "Persist", "Provider", "Publish", "Scheduler", "Writes"]


class CancelAnswer(Protocol):
    """What following reads of a cancel's answer (``worker.providers.CancelResult``)."""

    @property
    def snapshot(self) -> BatchSnapshot: ...
    @property
    def already_terminal(self) -> bool: ...


class Provider(Protocol):
    """What following needs from a provider client (``worker.providers.ProviderClient`` in production)."""

    async def cancel(self, account: str, batch_id: str, *, priority: Priority = ...) -> CancelAnswer: ...
    async def retrieve(self, account: str, batch_id: str, *, priority: Priority = ...) -> BatchSnapshot: ...


class Writes(Protocol):
    """Who writes follows' states (``StateWrites``)."""

    def enqueue(self, follow: Durable) -> None: ...


class Scheduler(Protocol):
    """When polls happen (``worker.follow.scheduler.PollScheduler``)."""

    def schedule(
        self, follow: Follow, delay: float, *, urgent: bool = False, cancel: bool = False, bulk: bool = False
    ) -> None: ...
    def unschedule(self, follow: Follow) -> None: ...


class Owner(Protocol):
    """Who keeps the follow (``Follows``): told when one of its commands got its final event, and when it ends."""

    def finished(self, sub: Subscriber, event: BatchStateEvent) -> None: ...
    def ended(self, follow: Follow) -> None: ...


Publish = Callable[[Subscriber, BatchStateEvent], Awaitable[None]]
#: Write the follow's state (``None``: a tombstone) to its partition; returns once it is durable.
Persist = Callable[[str, FollowState | None], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class FollowServices:
    """The collaborators every follow of one (partition, provider, account) shares."""

    provider: Provider
    publish: Publish
    persist: Persist
    policy: FollowPolicy
    scheduler: Scheduler
    writes: Writes
    owner: Owner | None = None
