"""A selector's child cancels at bulk priority, behind plain cancels, until someone names its batch."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.fakes import FakeProvider, Rec, Sink, command, make, submit_all
from tests.support.waiting import until
from worker.budget import Priority

CHILD: dict[str, Any] = {"metadata": {"bcw.parent": "kill-1"}}


@pytest.mark.parametrize(("extra", "expected"), [(CHILD, Priority.BULK), ({}, Priority.CANCEL)])
async def test_a_childs_cancel_is_bulk_and_a_plain_one_is_not(extra: dict[str, Any], expected: Priority) -> None:
    provider = FakeProvider(polls=["cancelled"])
    d = make(provider, Sink())
    try:
        submit_all(d, [Rec(command("c1", "batch_1", **extra), offset=0)])
        await until(lambda: provider.cancels == 1)
        assert provider.cancel_priorities == [expected]
    finally:
        await d.follows.close()


async def test_a_plain_command_joining_a_queued_child_promotes_its_cancel() -> None:
    provider = FakeProvider(polls=["cancelled"])
    sink = Sink()
    d = make(provider, sink)
    try:
        submit_all(d, [Rec(command("child", "batch_1", **CHILD), offset=0), Rec(command("plain"), offset=1)])
        await until(lambda: len(sink.for_command("plain")) > 0 and sink.for_command("plain")[-1].final)
        assert provider.cancel_priorities == [Priority.CANCEL]  # one cancel, at plain priority
    finally:
        await d.follows.close()
