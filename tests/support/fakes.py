"""In-process fakes for the dispatch and follow logic: a provider, the event sink, the follow-state topic.

The end-to-end and reliability tests prove the same paths over a real broker and real HTTP; these fakes let
the unit tests pin the rules that are hard to provoke there (tests/test_dispatch.py, tests/test_signing.py,
tests/follow/test_follow_resume.py).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from worker.budget import Priority
from worker.contract import BatchSnapshot, BatchStateEvent, BatchStatus, DeadLetterReason, FollowState
from worker.dispatch import Dispatcher
from worker.follow import FollowPolicy, Follows
from worker.kafka.offsets import PartitionOffsets
from worker.providers import CancelResult

__all__ = [
    "FAST",
    "FakeProvider",
    "MakeDispatcher",
    "Rec",
    "Sink",
    "States",
    "close",
    "command",
    "make",
    "snap",
    "submit_all",
]

#: Follow intervals short enough that a unit test's follow ends in milliseconds.
FAST = FollowPolicy(initial_interval=0.01, max_interval=0.05, backoff=2.0, max_follow=30)


def snap(status: str) -> BatchSnapshot:
    return BatchSnapshot(status=BatchStatus(status), provider_status=status)


@dataclass
class FakeProvider:
    """Answers cancel with ``cancel_status`` (once ``cancel_gate`` is set, if given) and each GET with the next
    status of ``polls`` (last one sticks)."""

    cancel_status: str = "cancelling"
    polls: list[str] = field(default_factory=lambda: ["cancelling", "cancelled"])
    cancel_error: Exception | None = None
    cancels: int = 0
    cancel_priorities: list[Priority] = field(default_factory=list)
    gets: int = 0
    already_terminal: bool = False
    cancel_gate: asyncio.Event | None = None
    get_priorities: list[Priority] = field(default_factory=list)
    retrieve_gate: asyncio.Event | None = None  # set: GETs answer; clear: they wait on the wire

    async def cancel(self, account: str, batch_id: str, *, priority: Priority = Priority.CANCEL) -> CancelResult:
        self.cancels += 1
        self.cancel_priorities.append(priority)
        await asyncio.sleep(0)
        if self.cancel_gate is not None:
            await self.cancel_gate.wait()
        if self.cancel_error:
            raise self.cancel_error
        return CancelResult(snapshot=snap(self.cancel_status), already_terminal=self.already_terminal)

    async def retrieve(self, account: str, batch_id: str, *, priority: Priority = Priority.POLL) -> BatchSnapshot:
        status = self.polls[min(self.gets, len(self.polls) - 1)]
        self.gets += 1
        self.get_priorities.append(priority)
        if self.retrieve_gate is not None:
            await self.retrieve_gate.wait()
        return snap(status)


@dataclass
class Rec:
    value: bytes | None
    offset: int = 0
    topic: str = "commands"
    partition: int = 0
    headers: Sequence[tuple[str, bytes]] = ()
    key: bytes | None = None
    timestamp: int = 0


class Sink:
    def __init__(self) -> None:
        self.events: list[BatchStateEvent] = []
        self.dead: list[tuple[Rec, DeadLetterReason, str]] = []

    async def publish(self, event: BatchStateEvent, context: Any) -> None:
        self.events.append(event)

    async def dead_letter(self, record: Any, reason: DeadLetterReason, message: str, context: Any) -> None:
        self.dead.append((record, reason, message))

    def for_command(self, command_id: str) -> list[BatchStateEvent]:
        return [e for e in self.events if e.command_id == command_id]


def command(cid: str, batch: str = "batch_1", **extra: Any) -> bytes:
    return json.dumps({"command_id": cid, "provider": "p", "batch_id": batch} | extra).encode()


class States:
    """The follow-state topic in memory: every write in order; ``hold`` keeps writes from being acknowledged."""

    def __init__(self) -> None:
        self.writes: list[tuple[int, str, FollowState | None]] = []
        self.hold = asyncio.Event()
        self.hold.set()

    async def write(self, partition: int, key: str, state: FollowState | None) -> None:
        await self.hold.wait()
        self.writes.append((partition, key, state))

    def latest(self, key: str = "p/default/batch_1") -> FollowState | None:
        return [s for _, k, s in self.writes if k == key][-1]


def make(
    provider: FakeProvider,
    sink: Sink,
    states: States | None = None,
    policy: FollowPolicy = FAST,
    *,
    accounts: frozenset[str] = frozenset({"default"}),
    verifier: Any = None,
    selectors: Any = None,
    push_intervals: dict[tuple[str, str], float] | None = None,
) -> Dispatcher:
    """A dispatcher for provider ``p`` and its ``Follows`` (``d.follows``), wired as app.py wires them."""
    providers, allowed = {"p": provider}, {"p": accounts}
    follows = Follows(providers, allowed, sink, states or States(), policy, push_intervals=push_intervals)
    return Dispatcher(
        providers, allowed, sink, follows, max_command_bytes=65536, verifier=verifier, selectors=selectors
    )


#: The ``make_dispatcher`` fixture (tests/conftest.py): ``make``, with every dispatcher built closed afterwards.
MakeDispatcher = Callable[..., Dispatcher]


async def close(d: Dispatcher) -> None:
    """Stop what a dispatcher and its follows started (dead-letter tasks, schedulers, state writers)."""
    await d.stop_intake()
    await d.follows.close()


def submit_all(d: Dispatcher, records: list[Rec]) -> PartitionOffsets:
    offsets = PartitionOffsets()
    for r in records:
        offsets.started(r.offset)
        d.submit(r, offsets)
    return offsets
