"""Secrets never leave the worker: not in logs, events, dead letters, metrics or the emulator's request log.

The keys are recognisable strings; a full scenario set runs (success, retries, a 401 with a wrong key, an
invalid command) and then every output channel is searched for them.
"""

from __future__ import annotations

import uuid

from tests.support.events import EventLog, publish_commands
from tests.support.stack import WRONG_KEY, StackFactory

GOOD_KEY = "sk-SECRET-canary-5f1d2c9e8b7a"


async def test_no_secret_reaches_any_output(make_stack: StackFactory) -> None:
    s = make_stack(partitions=1)
    for dialect in ("openai", "siliconflow"):
        s.emulator.add_key(dialect, GOOD_KEY)
    worker = s.start_worker(name="secrets", E2E_KEY=GOOD_KEY, BCW_LOG_LEVEL="DEBUG")
    ok = s.emulator.create_batch("siliconflow", f"batch_{uuid.uuid4().hex[:8]}", faults=[{"kind": "overload"}])
    bad = s.emulator.create_batch("openai", f"batch_{uuid.uuid4().hex[:8]}")
    commands = [
        {"provider": "siliconflow", "batch_id": ok},
        {"provider": "openai", "account": "wrongkey", "batch_id": bad},
    ]
    async with EventLog(s.bootstrap, s.events) as events, EventLog(s.bootstrap, s.dlq) as dlq:
        ids = await publish_commands(s.bootstrap, s.commands, commands)
        await publish_commands(s.bootstrap, s.commands, [b'{"command_id": "c", "provider": "openai"}'])
        await events.wait_finals(ids, timeout=60)
        await dlq.wait_until(lambda: len(dlq.records) == 1, timeout=30, what="the dead letter")
        outputs = {
            "events": b"".join((p.raw or b"") + repr(p.headers).encode() for p in events.records),
            "dlq": b"".join((p.raw or b"") + repr(p.headers).encode() for p in dlq.records),
        }
    outputs["metrics"] = worker.get("/metrics")[1].encode()
    outputs["log"] = worker.log_text().encode()
    outputs["emulator request log"] = repr(s.emulator.requests()).encode()
    assert b"command finished" in outputs["log"]  # the log really was written at the level searched
    for channel, text in outputs.items():
        for secret in (GOOD_KEY, WRONG_KEY):
            assert secret.encode() not in text, f"{secret} leaked into {channel}"
