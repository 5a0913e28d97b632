"""The emulator's push machinery in-process: which change makes which event, the secrets' two readings, the
backoff, and 10,000 timed cancels ending on one timer (``tests/e2e/test_push_fidelity.py`` verifies the
deliveries over real HTTP with the providers' own verifiers)."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from batch_cancel_emulator import push_events
from batch_cancel_emulator.model import Scenario, Store
from batch_cancel_emulator.push import Pusher, PushRetry, PushTarget
from tests.support.waiting import until


def _event(dialect: str, before: str, after: str) -> push_events.Event | None:
    batch = Store().create(dialect, "b1", Scenario())
    return push_events.build_event(batch, before, after, 1_700_000_000.5)


@pytest.mark.parametrize(
    ("dialect", "before", "after", "kind"),
    [
        ("openai", "cancelling", "cancelled", "batch.cancelled"),
        ("openai", "in_progress", "completed", "batch.completed"),
        ("openai", "in_progress", "cancelling", None),  # OpenAI tells of terminal states only
        ("gemini", "cancelling", "completed", "batch.succeeded"),
        ("gemini", "cancelling", "expired", "batch.expired"),
        ("gemini", "cancelling", "cancelled", None),  # the official enum has no cancelled event
        ("bedrock", "in_progress", "cancelling", "Stopping"),  # EventBridge: every status change
        ("bedrock", "cancelling", "failed", "Failed"),
        ("bedrock", "in_progress", "finalizing", None),  # both InProgress: nothing AWS could see changed
        ("anthropic", "cancelling", "cancelled", None),  # nobody else pushes
    ],
)
def test_which_change_makes_which_event(dialect: str, before: str, after: str, kind: str | None) -> None:
    event = _event(dialect, before, after)
    assert (event.kind if event else None) == kind
    if event is not None and dialect == "bedrock":
        body = json.loads(event.body)
        assert body["detail"]["status"] == kind and body["id"] == event.delivery_id
        assert body["time"] == "2023-11-14T22:13:20Z"


def test_secrets_are_read_as_each_providers_verifier_reads_them() -> None:
    raw = base64.b64encode(b"\x01" * 24).decode()
    assert push_events.signing_key("openai", "whsec_" + raw) == b"\x01" * 24
    assert push_events.signing_key("openai", raw) == raw.encode()  # OpenAI's SDK: no prefix, raw bytes
    assert push_events.signing_key("gemini", raw) == b"\x01" * 24  # standardwebhooks: always base64
    assert push_events.signing_key("gemini", "whsec_" + raw.rstrip("=")) == b"\x01" * 24  # unpadded is padded
    for dialect, secret in (("openai", ""), ("gemini", "whsec_"), ("gemini", "whsec_!!!!")):
        with pytest.raises(ValueError, match="secret"):
            push_events.signing_key(dialect, secret)


def test_backoff_grows_by_its_factor_up_to_its_cap() -> None:
    policy = PushRetry(initial_s=0.2, factor=3, max_interval_s=1.0)
    assert [policy.wait_after(n) for n in (1, 2, 3, 4)] == pytest.approx([0.2, 0.6, 1.0, 1.0])


async def test_ten_thousand_timed_cancels_end_on_one_timer_and_are_each_delivered_once() -> None:
    """No task per batch: before the cancels are due nothing but the one loop timer waits; then a fixed pool of
    senders delivers every event once."""
    received: list[bytes] = []

    async def post(url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> int:
        assert url == "http://receiver/openai" and headers["webhook-id"].startswith("wh_") and timeout_s == 10
        received.append(body)
        await asyncio.sleep(0)  # a real post yields to the loop too
        return 200

    store = Store()
    pusher = Pusher(store.get, concurrency=16, post=post)
    pusher.register(PushTarget(dialect="openai", url="http://receiver/openai", secret="raw-secret"))
    scenario = Scenario(cancelling_s=0.2)
    batches = [store.create("openai", f"batch_{i}", scenario) for i in range(10_000)]
    for batch in batches:
        before = batch.status, batch.shown_status
        assert batch.cancel()
        pusher.observe(batch, *before)
    assert len(asyncio.all_tasks()) == 1 and pusher.stats()["pending"] == 10_000  # this test's task, heap entries

    await until(lambda: len(received) == 10_000, 60, "10,000 deliveries", step=lambda: asyncio.sleep(0.05))
    assert sorted(json.loads(body)["data"]["id"] for body in received) == sorted(b.id for b in batches)
    assert all(b.status == "cancelled" for b in batches)
    assert len(asyncio.all_tasks()) == 1 + 16 and pusher.stats()["delivered"] == {"openai": 10_000}
    assert pusher.stats()["pending"] == 0
    for task in asyncio.all_tasks() - {asyncio.current_task()}:
        task.cancel()
