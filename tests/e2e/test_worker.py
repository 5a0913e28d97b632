"""The product, end to end: commands on a real broker, a worker process, real HTTP to the emulator."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.support.events import EventLog, publish_commands
from tests.support.stack import DIALECTS, Stack, StackFactory, wait_committed


def bid(prefix: str = "batch") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def statuses(log: EventLog, command_id: str) -> list[tuple[str | None, bool]]:
    return [(p.value.get("status"), p.value["final"]) for p in log.by_command[command_id]]


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_each_dialect_cancel_follow_and_commit(shared_stack: Stack, dialect: str) -> None:
    s = shared_stack
    batch = s.emulator.create_batch(dialect, bid(), cancelling_polls=3)
    async with EventLog(s.bootstrap, s.events) as log:
        (cid,) = await publish_commands(s.bootstrap, s.commands, [{"provider": dialect, "batch_id": batch}])
        await log.wait_finals([cid], timeout=30)
        seen = statuses(log, cid)
        assert seen[0] == ("cancelling", False)
        assert seen[-1] == ("cancelled", True)
        assert sum(final for _, final in seen) == 1
        final = log.finals(cid)[0]
        assert final["outcome"] == "cancelled" and final["provider"] == dialect and final["batch_id"] == batch
        headers = log.by_command[cid][-1].headers
        assert headers["ce_specversion"] == b"1.0" and headers["ce_subject"].decode().endswith(batch)
        assert log.by_command[cid][-1].key == f"{dialect}/default/{batch}".encode()
    cancels = [r for r in s.emulator.requests(batch_id=batch) if r["method"] == "POST"]
    assert len(cancels) == 1
    await wait_committed(s)


async def test_overload_is_retried_until_the_cancel_goes_through(shared_stack: Stack) -> None:
    s = shared_stack
    batch = s.emulator.create_batch("siliconflow", bid(), faults=[{"kind": "overload", "count": 3}])
    async with EventLog(s.bootstrap, s.events) as log:
        (cid,) = await publish_commands(s.bootstrap, s.commands, [{"provider": "siliconflow", "batch_id": batch}])
        await log.wait_finals([cid], timeout=60)
        assert log.finals(cid)[0]["outcome"] == "cancelled"
    cancels = [r for r in s.emulator.requests(batch_id=batch) if r["method"] == "POST"]
    assert [r["status"] for r in cancels] == [503, 503, 503, 200]


async def test_wrong_key_is_rejected_after_one_call(shared_stack: Stack) -> None:
    s = shared_stack
    batch = s.emulator.create_batch("openai", bid())
    async with EventLog(s.bootstrap, s.events) as log:
        (cid,) = await publish_commands(
            s.bootstrap, s.commands, [{"provider": "openai", "account": "wrongkey", "batch_id": batch}]
        )
        await log.wait_finals([cid], timeout=30)
        (final,) = log.finals(cid)
        assert final["outcome"] == "rejected" and final["detail"]["http_status"] == 401
    assert len(s.emulator.requests(batch_id=batch)) == 1


async def test_unknown_batch_is_rejected_404(shared_stack: Stack) -> None:
    s = shared_stack
    async with EventLog(s.bootstrap, s.events) as log:
        (cid,) = await publish_commands(s.bootstrap, s.commands, [{"provider": "deepinfra", "batch_id": bid("nope")}])
        await log.wait_finals([cid], timeout=30)
        (final,) = log.finals(cid)
        assert final["outcome"] == "rejected" and final["detail"]["http_status"] == 404


async def test_cancel_of_a_completed_batch_reports_completed(shared_stack: Stack) -> None:
    s = shared_stack
    batch = s.emulator.create_batch("openai", bid(), status="completed")
    async with EventLog(s.bootstrap, s.events) as log:
        (cid,) = await publish_commands(s.bootstrap, s.commands, [{"provider": "openai", "batch_id": batch}])
        await log.wait_finals([cid], timeout=30)
        (final,) = log.finals(cid)
        assert final["outcome"] == "completed" and final["already_terminal"] is True
    methods = [r["method"] for r in s.emulator.requests(batch_id=batch)]
    assert methods == ["POST", "GET"]


def _cmd(**fields: Any) -> bytes:
    return json.dumps({"command_id": str(uuid.uuid4()), "provider": "openai", "batch_id": "batch_x", **fields}).encode()


MALFORMED: list[tuple[str, bytes, str]] = [
    ("empty", b"", "invalid_json"),
    ("not json", b"cancel batch_1 please", "invalid_json"),
    ("invalid utf-8", b'{"command_id": "\xff\xfe"}', "invalid_encoding"),
    ("json array", b"[1, 2, 3]", "schema_violation"),
    ("json string", b'"batch_1"', "schema_violation"),
    ("null", b"null", "schema_violation"),
    ("missing batch_id", json.dumps({"command_id": "m1", "provider": "openai"}).encode(), "schema_violation"),
    ("path traversal", _cmd(batch_id="../../x"), "invalid_batch_id"),
    ("slash in id", _cmd(batch_id="batch/1/cancel"), "invalid_batch_id"),
    ("percent-encoded", _cmd(batch_id="%2e%2e"), "invalid_batch_id"),
    ("query in id", _cmd(batch_id="b?x=1"), "invalid_batch_id"),
    ("url as provider", _cmd(provider="https://evil.example/v1"), "schema_violation"),
    ("unknown provider", _cmd(provider="anthropic"), "unknown_provider"),
    ("unknown account", _cmd(account="someone-else"), "unknown_account"),
    ("unknown field", _cmd(dry_run=True), "schema_violation"),
    ("reason too long", _cmd(reason="x" * 5000), "schema_violation"),
    ("2 MB value", _cmd(reason="y" * 2_000_000), "too_large"),
    ("deep nesting", b'{"a":' * 10_000 + b"1" + b"}" * 10_000, "invalid_json"),
]


async def test_malformed_commands_go_to_the_dlq_and_the_worker_keeps_working(shared_stack: Stack) -> None:
    s = shared_stack
    headers = [("origin", b"e2e-malformed")]
    async with EventLog(s.bootstrap, s.dlq) as dlq, EventLog(s.bootstrap, s.events) as log:
        await publish_commands(s.bootstrap, s.commands, [value for _, value, _ in MALFORMED], headers=headers)
        batch = s.emulator.create_batch("openai", bid())
        (good,) = await publish_commands(s.bootstrap, s.commands, [{"provider": "openai", "batch_id": batch}])
        await dlq.wait_until(lambda: len(dlq.records) >= len(MALFORMED), timeout=30, what="all dead letters")
        await log.wait_finals([good], timeout=30)
    assert len(dlq.records) == len(MALFORMED)
    assert sorted(p.raw or b"" for p in dlq.records) == sorted(value for _, value, _ in MALFORMED)
    reasons = sorted(p.headers["bcw.dlq.reason"].decode() for p in dlq.records)
    assert reasons == sorted(r for _, _, r in MALFORMED)
    for p in dlq.records:
        assert p.headers["origin"] == b"e2e-malformed"
        assert p.headers["__connect.errors.topic"] == s.commands.encode()
    assert w_alive(s)


def w_alive(s: Stack) -> bool:
    return all(w.proc is not None and w.proc.poll() is None for w in s.workers)


async def test_three_workers_share_the_load_and_every_command_ends_once(make_stack: StackFactory) -> None:
    s = make_stack(partitions=6)
    for i in range(3):
        s.start_worker(name=f"scale{i}")
    n = 2000
    batches = s.emulator.create_batches("openai", n, prefix=f"scale_{uuid.uuid4().hex[:6]}", cancelling_polls=2)
    async with EventLog(s.bootstrap, s.events) as log:
        ids = await publish_commands(s.bootstrap, s.commands, [{"provider": "openai", "batch_id": b} for b in batches])
        await log.wait_finals(ids, timeout=240)
        assert all(len(log.finals(c)) == 1 for c in ids)
        assert {log.finals(c)[0]["outcome"] for c in ids} == {"cancelled"}
    await wait_committed(s)
    cancelled = {r["batch_id"] for r in s.emulator.requests(dialect="openai") if r["method"] == "POST"}
    assert set(batches) <= cancelled
    for w in s.workers:
        assert w.terminate() == 0, w.log_tail()


async def test_a_killed_worker_is_replaced_and_every_command_finishes(make_stack: StackFactory) -> None:
    s = make_stack(partitions=2)
    first = s.start_worker(name="victim")
    batches = s.emulator.create_batches("dashscope", 40, prefix=f"kill_{uuid.uuid4().hex[:6]}", cancelling_s=4.0)
    async with EventLog(s.bootstrap, s.events) as log:
        ids = await publish_commands(
            s.bootstrap, s.commands, [{"provider": "dashscope", "batch_id": b} for b in batches]
        )
        await log.wait_until(
            lambda: sum(1 for c in ids if log.by_command.get(c)) == len(ids), timeout=30, what="every cancel accepted"
        )
        assert not any(log.finals(c) for c in ids), "batches should still be cancelling when the worker dies"
        first.kill()
        s.start_worker(name="replacement")
        await log.wait_finals(ids, timeout=90)
        assert all(len(log.finals(c)) == 1 and log.finals(c)[0]["outcome"] == "cancelled" for c in ids)
    await wait_committed(s)
