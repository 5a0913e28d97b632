"""Push, end to end: the receiver process, a real broker, a worker process and the emulator.

The receiver is ``batch-cancel-worker webhooks`` as deployed; deliveries are signed by the ``standardwebhooks``
library (tests/webhooks/signed.py) or sent by the emulator as the providers send them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from batch_cancel_emulator.testing import DEFAULT_KEY, Emulator, PushRetry
from devstack.broker import KafkaBroker
from tests.support.events import EventLog, publish_commands
from tests.support.stack import Stack
from tests.support.waiting import until
from tests.webhooks.signed import WHSEC, gemini_body, openai_body, sign

PUSH = {"openai": WHSEC, "gemini": WHSEC}


@pytest.fixture(scope="module")
def stack(kafka: KafkaBroker, emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(kafka, emulator, tmp_path_factory.mktemp("push"), dialects=("openai", "gemini"), push=PUSH)
    yield s
    s.close()


FAST_RETRY = PushRetry(initial_s=0.2, factor=2.0, max_interval_s=2.0, max_attempts=30)


@pytest.fixture(scope="module")
def receiver_url(stack: Stack) -> Iterator[str]:
    """The receiver, and the emulator's OpenAI batches pushed to it (for this module only: the emulator is shared)."""
    url = stack.start_receiver()[1]
    stack.emulator.push_to("openai", f"{url}/webhooks/openai/default", secret=WHSEC, retry=FAST_RETRY)
    yield url
    stack.emulator.push_to("openai", None)


async def _signals(stack: Stack, topic: str | None = None) -> list[dict[str, Any]]:
    """Every record on the signals topic so far."""
    consumer = AIOKafkaConsumer(
        topic or stack.topics.signals_topic,
        bootstrap_servers=stack.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    try:
        await until(lambda: bool(consumer.assignment()), timeout=10, what="the signals topic's partitions")
        ends = await consumer.end_offsets(list(consumer.assignment()))
        out: list[dict[str, Any]] = []
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                out += [json.loads(r.value) for r in records if r.value]
        return out
    finally:
        await consumer.stop()


async def _post(url: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    async with httpx.AsyncClient(timeout=30) as client:
        r = await client.post(f"{url}{path}", content=body, headers={"content-type": "application/json", **headers})
    return r.status_code, r.json()["result"]


async def test_only_verified_deliveries_become_signals(stack: Stack, receiver_url: str) -> None:
    good = openai_body("batch_e2egood")
    good_headers = sign(WHSEC, good)
    big = b"{" + b" " * 70_000 + b"}"
    deliveries = [
        ("/webhooks/openai/default", good, sign("whsec_d3Jvbmctc2VjcmV0", good), (401, "bad_signature")),
        ("/webhooks/openai/default", good, sign(WHSEC, good, at=time.time() - 3600), (401, "stale")),
        ("/webhooks/openai/default", good, sign(WHSEC, good, at=time.time() + 3600), (401, "stale")),
        ("/webhooks/openai/default", big, sign(WHSEC, big), (413, "too_large")),
        ("/webhooks/openai/other", good, good_headers, (404, "unknown_account")),
        ("/webhooks/openai/default", b"{not json", sign(WHSEC, b"{not json"), (400, "malformed")),
        ("/webhooks/openai/default", good, good_headers, (200, "delivered")),
        ("/webhooks/openai/default", good, good_headers, (200, "replayed")),
    ]
    for path, body, headers, answer in deliveries:
        assert await _post(receiver_url, path, body, headers) == answer, path
    gemini = gemini_body("batches/e2egemini")
    assert await _post(receiver_url, "/webhooks/gemini/default", gemini, sign(WHSEC, gemini)) == (200, "delivered")
    signals = await _signals(stack)
    assert [(s["provider"], s["batch_id"], s["delivery_id"]) for s in signals] == [
        ("openai", "batch_e2egood", good_headers["webhook-id"]),
        ("gemini", "e2egemini", signals[-1]["delivery_id"]),
    ]


async def test_a_signal_kafka_cannot_take_is_answered_503_and_the_providers_retry_delivers_it(
    kafka: KafkaBroker, tmp_path: Path
) -> None:
    """The signals topic refuses every record (a limit below a signal's size), as a misconfigured or failing
    cluster would: the receiver answers 503 and the provider (a private emulator: its pushes go here only)
    delivers again with backoff; once an operator fixes the topic, the next attempt is taken."""
    with Emulator() as emu:
        s = Stack(kafka, emu, tmp_path, dialects=("openai",), push=PUSH, signals_config={"max.message.bytes": "64"})
        try:
            _, url = s.start_receiver(env={"BCW_WEBHOOKS_WRITE_TIMEOUT_S": "2"})
            emu.push_to("openai", f"{url}/webhooks/openai/default", secret=WHSEC, retry=FAST_RETRY)
            batch = emu.create_batch("openai", cancelling_s=0.2)
            async with httpx.AsyncClient() as client:  # the cancel, as any client sends it
                cancelled = await client.post(
                    f"{emu.base_url('openai')}/batches/{batch}/cancel",
                    headers={"authorization": f"Bearer {DEFAULT_KEY}"},
                )
            assert cancelled.status_code == 200
            await until(lambda: len(emu.deliveries(batch_id=batch)) >= 2, timeout=30, what="two refused attempts")
            await _set_topic_config(s.bootstrap, s.topics.signals_topic, {"max.message.bytes": "1048576"})
            await until(
                lambda: emu.deliveries(batch_id=batch)[-1]["status"] == 200, timeout=30, what="a delivery taken"
            )
            attempts = emu.deliveries(batch_id=batch)
            assert {a["status"] for a in attempts[:-1]} == {503}
            assert len({a["delivery_id"] for a in attempts}) == 1  # one event, delivered again
            assert [(x["batch_id"], x["delivery_id"]) for x in await _signals(s)] == [
                (batch, attempts[0]["delivery_id"])
            ]
        finally:
            s.close()


async def _set_topic_config(bootstrap: str, topic: str, config: dict[str, str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=config)])
    finally:
        await admin.close()


async def test_the_emulators_push_ends_a_follow_within_a_second_of_the_batch_ending(
    stack: Stack, receiver_url: str
) -> None:
    """The account polls every 30 s as a safety net and the batch ends 2 s after the cancel, unpolled: only the
    push can end the follow in time, with two GETs (the cancel's confirmation and the signal's poll)."""
    stack.start_worker("push-worker")
    batch = stack.emulator.create_batch("openai", cancelling_s=2.0)
    async with EventLog(stack.bootstrap, stack.events) as log:
        [cid] = await publish_commands(stack.bootstrap, stack.commands, [{"provider": "openai", "batch_id": batch}])
        await log.wait_finals([cid], timeout=20)  # the safety poll would come 30 s after the confirmation
        [final] = log.finals(cid)
    assert final["outcome"] == "cancelled"
    [delivery] = stack.emulator.deliveries(dialect="openai", batch_id=batch)
    assert (delivery["event"], delivery["status"]) == ("batch.cancelled", 200)
    ended_to_final = datetime.fromisoformat(final["observed_at"]).timestamp() - delivery["changed_wall"]
    assert 0 < ended_to_final < 1.0, ended_to_final
    gets = [r for r in stack.emulator.requests(dialect="openai", batch_id=batch) if r["method"] == "GET"]
    assert len(gets) == 2


def test_no_webhook_secret_reaches_a_log(stack: Stack, receiver_url: str) -> None:
    """After every delivery above, good and forged: neither the secret nor its key bytes in any process's log."""
    secret_parts = (WHSEC, WHSEC.removeprefix("whsec_"), "d3Jvbmctc2VjcmV0")
    logs = {w.name: w.log_text() for w in stack.workers}
    assert "receiver" in logs and len(logs) >= 2
    assert [(name, p) for name, text in logs.items() for p in secret_parts if p in text] == []
