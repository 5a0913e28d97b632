"""The follow-state topic on a real broker: the start-up check, and ``batch-cancel follows`` reading it."""

from __future__ import annotations

import json
import sys
import uuid

import pytest

from devstack.broker import KafkaBroker
from devstack.topics import FOLLOWS_TOPIC_CONFIG
from tests.e2e.test_publishers import CLI, run
from tests.support.events import EventLog, publish_commands
from tests.support.stack import StackFactory


def bid() -> str:
    return f"batch_{uuid.uuid4().hex[:12]}"


@pytest.mark.parametrize(
    ("partitions", "config", "expected"),
    [
        (None, None, "does not exist"),
        (2, FOLLOWS_TOPIC_CONFIG, "has 2 partitions but"),
        (3, {"cleanup.policy": "delete"}, "cleanup.policy=delete: it must be compact"),
    ],
)
async def test_the_worker_refuses_a_follows_topic_that_cannot_keep_follows(
    make_stack: StackFactory, kafka: KafkaBroker, partitions: int | None, config: dict[str, str] | None, expected: str
) -> None:
    s = make_stack(partitions=3)
    topic = f"follows-bad-{uuid.uuid4().hex[:8]}"
    if partitions is not None:
        kafka.create_topic(topic, partitions, config)
    code, _, err = await run(sys.executable, "-m", "worker", "run", env={**s.env(), "BCW_FOLLOWS_TOPIC": topic})
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("batch-cancel-worker:")]
    assert len(lines) == 1 and expected in lines[0] and topic in lines[0], err


async def test_batch_cancel_follows_lists_live_follows_and_forgets_ended_ones(make_stack: StackFactory) -> None:
    s = make_stack(partitions=3)
    s.start_worker(name="follows-cli")
    slow, quick = bid(), bid()
    s.emulator.create_batch("openai", slow, cancelling_s=120.0)
    s.emulator.create_batch("openai", quick, cancelling_polls=1)
    async with EventLog(s.bootstrap, s.events) as events:
        ids = await publish_commands(
            s.bootstrap, s.commands, [{"provider": "openai", "batch_id": b} for b in (slow, quick)]
        )
        await events.wait_until(lambda: bool(events.by_command.get(ids[0])), what="the slow batch's first event")
        await events.wait_finals([ids[1]])
    env = {**s.env(), "BCW_FOLLOWS_TOPIC": s.follows}
    code, out, err = await run(str(CLI), "follows", "--json", env=env)
    assert code == 0, err
    listed = [json.loads(line) for line in out]
    mine = [f for f in listed if f["batch"].endswith(slow)]
    assert len(mine) == 1, listed
    assert mine[0]["status"] == "cancelling" and mine[0]["cancel_accepted"] and mine[0]["waiting"] == [ids[0]]
    assert not any(f["batch"].endswith(quick) for f in listed), "an ended follow is a tombstone, not listed"
    code, out, err = await run(str(CLI), "follows", "--provider", "dashscope", env=env)
    assert code == 0 and out[-1] == "0 live follows", (out, err)
    code, out, _ = await run(str(CLI), "follows", env=env)
    assert code == 0 and slow in "\n".join(out) and out[-1] == "1 live follows", out
