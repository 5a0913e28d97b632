"""Secrets never leave the worker: not in logs, events, dead letters, metrics or the emulator's request log.

The keys are recognisable strings; a full scenario set runs (success, retries, a 401 with a wrong key, an
invalid command, and Azure accounts signing in with Microsoft Entra ID: every credential kind, a refused client
secret, a revoked token) and then every output channel is searched for them, and for the Entra secrets and tokens.
"""

from __future__ import annotations

import uuid

from tests.support.entra import ENTRA_ACCOUNTS, entra_provider
from tests.support.events import EventLog, publish_commands
from tests.support.stack import WRONG_KEY, StackFactory

GOOD_KEY = "sk-SECRET-canary-5f1d2c9e8b7a"


async def test_no_secret_reaches_any_output(make_stack: StackFactory) -> None:
    s = make_stack(partitions=1)
    for dialect in ("openai", "siliconflow"):
        s.emulator.add_key(dialect, GOOD_KEY)
    entra = entra_provider(s.emulator, s.workdir, provider="entra")
    s.providers_file.write_text(s.providers_file.read_text() + entra.yaml)
    worker = s.start_worker(name="secrets", E2E_KEY=GOOD_KEY, BCW_LOG_LEVEL="DEBUG", **entra.env)
    ok = s.emulator.create_batch("siliconflow", f"batch_{uuid.uuid4().hex[:8]}", faults=[{"kind": "overload"}])
    bad = s.emulator.create_batch("openai", f"batch_{uuid.uuid4().hex[:8]}")
    commands = [
        {"provider": "siliconflow", "batch_id": ok},
        {"provider": "openai", "account": "wrongkey", "batch_id": bad},
    ]
    commands += [
        {"provider": "entra", "account": account, "batch_id": s.emulator.create_batch("azure", cancelling_s=1)}
        for account in (*ENTRA_ACCOUNTS, "wrongsecret")
    ]
    async with EventLog(s.bootstrap, s.events) as events, EventLog(s.bootstrap, s.dlq) as dlq:
        ids = await publish_commands(s.bootstrap, s.commands, commands)
        # tokens revoked while the batches are followed: each account's next request is refused, then retried
        await events.wait_until(lambda: all(events.by_command.get(c) for c in ids), what="the first events")
        s.emulator.revoke_entra_tokens()
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
    assert b"Entra access token refreshed" in outputs["log"]  # and the Entra paths ran
    for channel, text in outputs.items():
        for secret in (GOOD_KEY, WRONG_KEY, *entra.secrets):
            assert secret.encode() not in text, f"{secret[:12]}… leaked into {channel}"
