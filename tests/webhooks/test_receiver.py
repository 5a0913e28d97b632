"""The receiver's answers, one per kind of delivery, against a sink in memory (the real Kafka write and the real
provider deliveries are proven in tests/e2e/test_push.py)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.webhooks.signed import WHSEC, bedrock_body, gemini_body, openai_body, sign
from worker.contract import BatchSignal
from worker.telemetry import metrics
from worker.webhooks import HeaderSecret, Receiver, Route, StandardWebhooks


class Sink:
    def __init__(self) -> None:
        self.signals: list[BatchSignal] = []
        self.down = False

    async def write(self, signal: BatchSignal) -> None:
        if self.down:
            raise ConnectionError("broker unreachable")
        self.signals.append(signal)


ROUTES = {
    ("openai", "default"): Route(
        "openai", "default", "openai", StandardWebhooks([WHSEC.encode()], raw_without_prefix=True)
    ),
    ("gemini", "default"): Route(
        "gemini", "default", "gemini", StandardWebhooks([WHSEC.encode()], raw_without_prefix=False)
    ),
    ("bedrock", "prod"): Route("bedrock", "prod", "bedrock", HeaderSecret("x-bcw-token", [b"tok"])),
}

Post = Callable[..., Any]


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[TestClient[Any, Any], Sink]]:
    sink = Sink()
    client = TestClient(TestServer(Receiver(ROUTES, sink, max_body_bytes=4096).app()))
    await client.start_server()
    yield client, sink
    await client.close()


async def _post(client: TestClient[Any, Any], path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    response = await client.post(path, data=body, headers={"content-type": "application/json", **headers})
    return response.status, json.loads(await response.read())["result"]


def _count(provider: str, result: str) -> float:
    return float(metrics.WEBHOOK_DELIVERIES.labels(provider, result)._value.get())


async def test_a_verified_openai_delivery_becomes_one_signal_and_its_replay_none(
    receiver: tuple[TestClient[Any, Any], Sink],
) -> None:
    client, sink = receiver
    body = openai_body("batch_abc")
    headers = sign(WHSEC, body)
    assert await _post(client, "/webhooks/openai/default", body, headers) == (200, "delivered")
    assert await _post(client, "/webhooks/openai/default", body, headers) == (200, "replayed")
    [signal] = sink.signals
    assert (signal.key, signal.event, signal.delivery_id) == (
        "openai/default/batch_abc",
        "batch.cancelled",
        headers["webhook-id"],
    )
    assert signal.occurred_at is not None and signal.occurred_at.timestamp() == 1719168000


async def test_gemini_and_bedrock_deliveries_name_the_batch_as_commands_do(
    receiver: tuple[TestClient[Any, Any], Sink],
) -> None:
    client, sink = receiver
    body = gemini_body("batches/abc123")
    assert await _post(client, "/webhooks/gemini/default", body, sign(WHSEC, body)) == (200, "delivered")
    body = bedrock_body("job0001", "Stopped")
    assert await _post(client, "/webhooks/bedrock/prod", body, {"x-bcw-token": "tok"}) == (200, "delivered")
    assert await _post(client, "/webhooks/bedrock/prod", body, {"x-bcw-token": "tok"}) == (200, "replayed")
    assert [(s.key, s.event) for s in sink.signals] == [
        ("gemini/default/abc123", "batch.succeeded"),
        ("bedrock/prod/job0001", "Stopped"),
    ]


async def test_verified_events_that_are_not_a_batch_state_are_acknowledged_and_ignored(
    receiver: tuple[TestClient[Any, Any], Sink],
) -> None:
    client, sink = receiver
    body = openai_body(kind="fine_tuning.job.succeeded")
    assert await _post(client, "/webhooks/openai/default", body, sign(WHSEC, body)) == (200, "ignored")
    body = bedrock_body(**{"detail-type": "Model Customization Job State Change"})
    assert await _post(client, "/webhooks/bedrock/prod", body, {"x-bcw-token": "tok"}) == (200, "ignored")
    assert sink.signals == []


def _signed(body: bytes, secret: str = WHSEC, skew: float = 0.0) -> Callable[[], tuple[bytes, dict[str, str]]]:
    """A delivery signed when the test runs (``skew`` seconds off now), not when the module is collected."""
    return lambda: (body, sign(secret, body, at=time.time() + skew))


def _unsigned(body: bytes, headers: dict[str, str]) -> Callable[[], tuple[bytes, dict[str, str]]]:
    return lambda: (body, headers)


OPENAI = "/webhooks/openai/default"


@pytest.mark.parametrize(
    ("path", "delivery", "answer"),
    [
        (OPENAI, _unsigned(openai_body(), {}), (401, "bad_signature")),
        (OPENAI, _signed(openai_body(), "whsec_d3Jvbmctc2VjcmV0"), (401, "bad_signature")),
        (OPENAI, _signed(b"{}", skew=-600), (401, "stale")),
        (OPENAI, _signed(b"{}", skew=600), (401, "stale")),
        (OPENAI, _signed(b"not json"), (400, "malformed")),
        (OPENAI, _signed(b'{"type": "batch.failed"}'), (400, "malformed")),
        (OPENAI, _signed(openai_body("../etc")), (400, "malformed")),
        ("/webhooks/bedrock/prod", _unsigned(bedrock_body(), {"x-bcw-token": "nope"}), (401, "bad_signature")),
        ("/webhooks/openai/nobody", _signed(openai_body()), (404, "unknown_account")),
        ("/webhooks/mistral/default", _signed(openai_body()), (404, "unknown_account")),
    ],
)
async def test_a_bad_delivery_is_refused_with_its_status_and_makes_no_signal(
    receiver: tuple[TestClient[Any, Any], Sink],
    path: str,
    delivery: Callable[[], tuple[bytes, dict[str, str]]],
    answer: tuple[int, str],
) -> None:
    client, sink = receiver
    assert await _post(client, path, *delivery()) == answer
    assert sink.signals == []


async def test_an_oversized_body_is_refused_before_it_is_read_with_or_without_a_length(
    receiver: tuple[TestClient[Any, Any], Sink],
) -> None:
    client, sink = receiver
    big = b"{" + b" " * 5000 + b"}"
    assert await _post(client, "/webhooks/openai/default", big, sign(WHSEC, big)) == (413, "too_large")

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 1000

    response = await client.post("/webhooks/openai/default", data=chunks(), headers=sign(WHSEC, b"x"))
    assert response.status == 413
    assert sink.signals == []


async def test_kafka_unavailable_answers_503_and_the_retry_is_not_taken_for_a_replay(
    receiver: tuple[TestClient[Any, Any], Sink],
) -> None:
    client, sink = receiver
    body = openai_body("batch_retry")
    headers = sign(WHSEC, body)
    sink.down = True
    assert await _post(client, "/webhooks/openai/default", body, headers) == (503, "unavailable")
    sink.down = False
    assert await _post(client, "/webhooks/openai/default", body, headers) == (200, "delivered")
    assert [s.batch_id for s in sink.signals] == ["batch_retry"]


async def test_metrics_label_an_unconfigured_path_unknown_never_with_its_text(
    receiver: tuple[TestClient[Any, Any], Sink],
) -> None:
    client, _ = receiver
    before = _count("unknown", "unknown_account")
    await _post(client, "/webhooks/attacker-chosen/label", b"{}", {})
    assert _count("unknown", "unknown_account") == before + 1
    samples = next(iter(metrics.WEBHOOK_DELIVERIES.collect())).samples
    assert not any(s.labels.get("provider") == "attacker-chosen" for s in samples)


async def test_only_post_on_the_webhook_route_is_served(receiver: tuple[TestClient[Any, Any], Sink]) -> None:
    client, _ = receiver
    assert (await client.get("/webhooks/openai/default")).status == 405
    assert (await client.get("/metrics")).status == 404
    assert (await client.post("/", data=b"{}")).status == 404
