"""The poll scheduler: most overdue first, confirmations ahead of routine polls, never two polls of one
follow at once, and a poll that lands while the budget is exhausted waits instead of being dropped."""

from __future__ import annotations

import asyncio

from tests.support.waiting import until
from worker.follow.scheduler import PollScheduler


class Follow:
    def __init__(self, name: str, log: list[str], again: float | None = None) -> None:
        self.name = name
        self.ticket = 0
        self.log = log
        self.again = again
        self.polls = 0

    async def poll(self) -> float | None:
        self.polls += 1
        self.log.append(self.name)
        await asyncio.sleep(0)
        return self.again


async def test_overdue_polls_are_served_most_overdue_first_and_confirmations_before_them() -> None:
    log: list[str] = []
    clock = [100.0]
    s = PollScheduler("p/a", runners=1, clock=lambda: clock[0])
    try:
        s.schedule(Follow("late", log), 5.0)
        s.schedule(Follow("later", log), 1.0)
        s.schedule(Follow("soon", log), 9.0)
        clock[0] = 200.0  # the budget kept them all waiting: every one is overdue now
        s.schedule(Follow("confirm", log), 0.0, urgent=True)
        await until(lambda: len(log) == 4)
        assert log == ["confirm", "later", "late", "soon"]
    finally:
        await s.close()


async def test_a_follow_is_rescheduled_from_its_poll_and_rescheduling_replaces_the_old_entry() -> None:
    log: list[str] = []
    s = PollScheduler("p/a", runners=4)
    f = Follow("f", log, again=0.01)
    try:
        s.schedule(f, 10.0)
        s.schedule(f, 0.0)  # moved earlier: the 10 s entry is stale now
        await until(lambda: f.polls >= 3)
        assert s.scheduled <= 2
        f.again = None
        await until(lambda: s.scheduled == 0 and f.ticket == 0)
        polls = f.polls
        await asyncio.sleep(0.05)
        assert f.polls == polls, "a follow that said it is done was polled again"
    finally:
        await s.close()


async def test_unscheduled_follows_are_skipped_and_overdue_counts_what_waits() -> None:
    log: list[str] = []
    clock = [0.0]
    s = PollScheduler("p/a", runners=1, clock=lambda: clock[0])
    try:
        gone, kept = Follow("gone", log), Follow("kept", log)
        s.schedule(gone, 50.0)
        s.schedule(kept, 60.0)
        s.unschedule(gone)
        clock[0] = 100.0
        assert s.overdue(by=1.0) == 1
        s.schedule(Follow("now", log), 0.0)
        await until(lambda: log == ["kept", "now"] or len(log) >= 2)
        assert "gone" not in log
    finally:
        await s.close()


class Stuck(Follow):
    """A poll that waits for the budget forever (every runner can be in one)."""

    async def poll(self) -> float | None:
        self.log.append(self.name)
        await asyncio.Event().wait()
        return None


async def test_a_cancel_goes_out_while_every_poll_runner_waits_inside_a_poll() -> None:
    log: list[str] = []
    s = PollScheduler("p/a", runners=2)
    try:
        s.schedule(Stuck("stuck1", log), 0.0)
        s.schedule(Stuck("stuck2", log), 0.0)
        await until(lambda: log == ["stuck1", "stuck2"])
        s.schedule(Follow("queued poll", log), 0.0, urgent=True)
        s.schedule(Follow("cancel", log), 0.0, cancel=True)
        await until(lambda: "cancel" in log)
        assert "queued poll" not in log  # the runners are still busy; the cancel did not wait for them
    finally:
        await s.close()


async def test_a_plain_cancel_overtakes_thousands_of_a_selectors_child_cancels() -> None:
    """Every bulk slot is taken by a child cancel waiting for the budget and thousands more are queued: a plain
    cancel still gets a task of its own at once, and the queued children do not start beyond their allowance."""
    from worker.follow.scheduler import BULK_CANCELS_AT_ONCE

    log: list[str] = []
    s = PollScheduler("p/a", runners=1)
    try:
        children = [Stuck(f"child{i}", log) for i in range(BULK_CANCELS_AT_ONCE + 2_000)]
        for child in children:
            s.schedule(child, 0.0, cancel=True, bulk=True)
        await until(lambda: len(log) == BULK_CANCELS_AT_ONCE)
        s.schedule(Follow("plain cancel", log), 0.0, cancel=True)
        await until(lambda: "plain cancel" in log)
        assert len(log) == BULK_CANCELS_AT_ONCE + 1  # no child beyond the allowance started meanwhile
    finally:
        await s.close()
