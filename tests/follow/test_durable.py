"""The durable-write machine of one follow, driven directly: a fake persist, no dispatcher, no registry.

What it pins (docs/durable-follows.md rests on it): at most one write of a follow on the wire, later changes
coalesced into the newest state; a command's intent waits for the cancel's answer up to ``intent_delay``; a
command is released once a state naming it is durable; a follow that never wrote writes no tombstone; and a
new follow of a key writes its first record only after its predecessor's last one landed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from tests.support.fakes import FAST, FakeProvider
from tests.support.waiting import until
from worker.contract import BatchStateEvent, CancelCommand, FollowState
from worker.follow import CommandHandle, Follow, FollowPolicy, FollowServices, StateWrites, Subscriber

KEY = "p/default/batch_1"


class Persisted:
    """The follow-state topic as the machine sees it: every write in order; ``hold`` keeps the next ones on the wire."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, FollowState | None]] = []
        self.hold = asyncio.Event()
        self.hold.set()
        self.on_the_wire = 0

    async def __call__(self, key: str, state: FollowState | None) -> None:
        self.on_the_wire += 1
        try:
            await self.hold.wait()
        finally:
            self.on_the_wire -= 1
        self.writes.append((key, state))

    def waiting(self) -> list[list[str] | None]:
        return [None if s is None else [w.command_id for w in s.waiting] for _, s in self.writes]


class Scheduler:
    """Records what the follow asks for; nothing runs by itself (the tests call ``poll``)."""

    def __init__(self) -> None:
        self.scheduled: list[tuple[float, bool, bool]] = []
        self.unscheduled = 0

    def schedule(
        self, follow: Any, delay: float, *, urgent: bool = False, cancel: bool = False, bulk: bool = False
    ) -> None:
        self.scheduled.append((delay, urgent, cancel))

    def unschedule(self, follow: Any) -> None:
        self.unscheduled += 1


class Told:
    def __init__(self) -> None:
        self.events: list[BatchStateEvent] = []
        self.released: list[str] = []

    async def publish(self, sub: Subscriber, event: BatchStateEvent) -> None:
        self.events.append(event)


def build(
    persist: Persisted,
    told: Told,
    writes: StateWrites,
    *,
    provider: FakeProvider | None = None,
    policy: FollowPolicy = FAST,
    after: Follow | None = None,
    on_end: Callable[[Follow], None] | None = None,
) -> Follow:
    command = CancelCommand(command_id="first", provider="p", account="default", batch_id="batch_1")
    services = FollowServices(
        provider=provider or FakeProvider(),
        publish=told.publish,
        persist=persist,
        policy=policy,
        scheduler=Scheduler(),
        writes=writes,
        owner=Owner(on_end),
    )
    return Follow(services, command, after=after)


class Owner:
    def __init__(self, on_end: Callable[[Follow], None] | None) -> None:
        self.on_end = on_end

    def finished(self, sub: Subscriber, event: BatchStateEvent) -> None:
        pass

    def ended(self, follow: Follow) -> None:
        if self.on_end is not None:
            self.on_end(follow)


class Released(CommandHandle):
    """A handle that notes its release instead of marking an offset."""

    __slots__ = ("command_id", "told")

    def __init__(self, command_id: str, told: Told) -> None:
        super().__init__(None)
        self.command_id, self.told = command_id, told

    def release(self) -> None:
        self.told.released.append(self.command_id)


def subscriber(command_id: str, told: Told) -> Subscriber:
    return Subscriber(command_id, handle=Released(command_id, told))


async def test_changes_while_a_write_is_on_the_wire_go_out_together_as_the_newest_state() -> None:
    persist, told, writes = Persisted(), Told(), StateWrites(writers=4)
    follow = build(persist, told, writes, policy=FollowPolicy(intent_delay=0))
    persist.hold.clear()
    assert follow.join(subscriber("a", told))
    await until(lambda: persist.on_the_wire == 1)
    for cid in ("b", "c", "d"):  # three changes while the first write is on the wire ...
        follow.join(subscriber(cid, told))
    await asyncio.sleep(0)
    assert persist.on_the_wire == 1  # ... never a second write beside it
    persist.hold.set()
    await until(lambda: not follow.pending_write)
    assert persist.waiting() == [["a"], ["a", "b", "c", "d"]]  # one more write, with the newest state
    assert told.released == ["a", "b", "c", "d"]
    await writes.close()


async def test_an_intent_waits_for_the_cancel_answer_and_is_written_once_with_it() -> None:
    persist, told, writes = Persisted(), Told(), StateWrites(writers=4)
    follow = build(persist, told, writes, policy=FollowPolicy(intent_delay=30))
    follow.join(subscriber("a", told))
    await asyncio.sleep(0.02)
    assert persist.writes == [] and told.released == []  # not answered yet: nothing written
    assert await follow.poll() is None  # the cancel, answered "cancelling"
    await until(lambda: not follow.pending_write and bool(persist.writes))
    [(key, state)] = persist.writes
    assert key == KEY and state is not None and state.cancel_accepted and state.last_status is not None
    assert told.released == ["a"]
    await writes.close()


async def test_an_unanswered_cancel_gets_its_intent_written_when_the_delay_runs_out() -> None:
    persist, told, writes = Persisted(), Told(), StateWrites(writers=4)
    follow = build(persist, told, writes, policy=FollowPolicy(intent_delay=0.05))
    follow.join(subscriber("a", told))
    await until(lambda: told.released == ["a"])
    [(_, state)] = persist.writes
    assert state is not None and not state.cancel_accepted and [w.command_id for w in state.waiting] == ["a"]
    assert not follow.pending_write
    await writes.close()


async def test_a_stopped_follow_drops_its_unwritten_intent() -> None:
    persist, told, writes = Persisted(), Told(), StateWrites(writers=4)
    follow = build(persist, told, writes, policy=FollowPolicy(intent_delay=0.05))
    follow.join(subscriber("a", told))
    follow.stop()
    await asyncio.sleep(0.15)  # three intent delays: the timer would have fired by now
    assert persist.writes == [] and told.released == [] and not follow.pending_write
    await writes.close()


async def test_a_follow_that_ends_before_anything_was_written_writes_neither_state_nor_tombstone() -> None:
    persist, told, writes = Persisted(), Told(), StateWrites(writers=4)
    ended: list[Follow] = []
    provider = FakeProvider(cancel_status="cancelled", already_terminal=True)
    follow = build(persist, told, writes, provider=provider, policy=FollowPolicy(intent_delay=30), on_end=ended.append)
    follow.join(subscriber("a", told))
    await follow.poll()
    await until(lambda: ended == [follow] and not follow.pending_write)
    assert persist.writes == []
    assert [e.final for e in told.events] == [True] and told.released == ["a"]  # released by its final event
    await writes.close()


async def test_a_new_follow_of_a_key_writes_its_first_record_after_the_previous_ones_tombstone() -> None:
    persist, told, writes = Persisted(), Told(), StateWrites(writers=4)
    policy = FollowPolicy(intent_delay=0)
    provider = FakeProvider(cancel_status="cancelled")
    previous = build(persist, told, writes, provider=provider, policy=policy)
    previous.join(subscriber("a", told))
    await until(lambda: not previous.pending_write)
    assert persist.waiting() == [["a"]]
    persist.hold.clear()
    await previous.poll()  # cancelled at once: "a" is finished, the tombstone goes on the wire and waits
    await until(lambda: persist.on_the_wire == 1)
    assert not previous.active and previous.pending_write
    following = build(persist, told, writes, policy=policy, after=previous)
    following.join(subscriber("b", told))
    await asyncio.sleep(0.02)
    assert persist.on_the_wire == 1  # "b"'s record waits for the tombstone
    persist.hold.set()
    await until(lambda: not following.pending_write and not previous.pending_write)
    assert persist.waiting() == [["a"], None, ["b"]]
    await writes.close()


async def test_when_written_runs_once_nothing_is_left_to_write() -> None:
    persist, told, writes = Persisted(), Told(), StateWrites(writers=4)
    follow = build(persist, told, writes, policy=FollowPolicy(intent_delay=0))
    calls: list[str] = []
    follow.when_written(lambda: calls.append("idle"))
    assert calls == ["idle"]  # nothing pending: at once
    persist.hold.clear()
    follow.join(subscriber("a", told))
    follow.when_written(lambda: calls.append("written"))
    await asyncio.sleep(0.02)
    assert calls == ["idle"]
    persist.hold.set()
    await until(lambda: calls == ["idle", "written"])
    await writes.close()
