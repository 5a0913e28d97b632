"""The emulator's pushed deliveries, verified by code we did not write: OpenAI's SDK and ``standardwebhooks``.

The emulator runs as a subprocess and posts over real HTTP to a loopback sink in this test. OpenAI deliveries
must pass ``OpenAI(webhook_secret=...).webhooks.unwrap`` (a ``whsec_`` secret and a raw one) and parse into
the SDK's own event models; OpenAI (``whsec_``) and Gemini deliveries must pass ``standardwebhooks``' verify;
a wrong secret is refused by both (so these tests can fail). Bedrock's EventBridge events carry the API-key
header and the documented event shape. No test polls the batch: the delivery must come because the batch's
timed cancel ended. Retries keep the event id and re-sign with a fresh timestamp.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, get_args

import botocore.config
import botocore.session
import httpx
import pytest
import standardwebhooks
from google.genai.webhooks import WebhookSubscribedEvent
from openai import InvalidWebhookSignatureError, OpenAI
from openai.types.webhooks import (
    BatchCancelledWebhookEvent,
    BatchCompletedWebhookEvent,
    BatchExpiredWebhookEvent,
    BatchFailedWebhookEvent,
)

from batch_cancel_emulator.testing import DEFAULT_AWS_KEY, DEFAULT_KEY, Emulator, PushRetry
from tests.support.waiting import until_sync

FAST = PushRetry(initial_s=0.05, max_attempts=3)
#: Long enough that the test's cancel call has returned; short enough that nothing waits for long.
CANCELLING_S = 0.3


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Sink:
    """A loopback HTTP server that records every POST; ``answers[path]`` are the statuses to give, in order
    (then 200)."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    answers: dict[str, list[int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path == path]


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator() as emu:
        yield emu


@pytest.fixture
def emu(emulator: Emulator) -> Emulator:
    emulator.reset()
    return emulator


@pytest.fixture
def sink() -> Iterator[Sink]:
    state = Sink()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver behind a proxy would

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            with state.lock:
                state.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                planned = state.answers.get(self.path)
                status = planned.pop(0) if planned else 200
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        request_queue_size = 256  # the emulator opens up to 64 connections at once; 5 would drop SYNs (1 s each)

    server = Server(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _whsec() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def _openai_cancel(emu: Emulator, *batch_ids: str) -> None:
    client = OpenAI(api_key=DEFAULT_KEY, base_url=emu.base_url("openai"), max_retries=0)
    for batch_id in batch_ids:
        assert client.batches.cancel(batch_id).status == "cancelling"


def _bedrock(emu: Emulator) -> Any:
    access_key, secret_key = DEFAULT_AWS_KEY
    return botocore.session.get_session().create_client(
        "bedrock",
        endpoint_url=emu.url + "/bedrock",
        region_name="us-east-1",
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=botocore.config.Config(retries={"total_max_attempts": 1}),
    )


def _no_polls(emu: Emulator, dialect: str, batch_id: str) -> None:
    """Only the cancel reached the batch: its delivery came because the timed cancel ended, not a poll."""
    assert [r["op"] for r in emu.requests(dialect=dialect, batch_id=batch_id)] == ["cancel"]


def test_openai_deliveries_pass_the_openai_sdk_and_standardwebhooks(emu: Emulator, sink: Sink) -> None:
    secret = _whsec()
    emu.push_to("openai", sink.url + "/openai", secret=secret, retry=FAST)
    expected = {
        "cancelled": BatchCancelledWebhookEvent,
        "completed": BatchCompletedWebhookEvent,
        "failed": BatchFailedWebhookEvent,
        "expired": BatchExpiredWebhookEvent,
    }
    ids = {final: emu.create_batch("openai", cancelling_s=CANCELLING_S, final=final) for final in expected}
    _openai_cancel(emu, *ids.values())
    until_sync(lambda: len(sink.on("/openai")) == 4, 10, "four OpenAI deliveries", interval=0.02)

    sdk = OpenAI(api_key=DEFAULT_KEY, base_url=emu.base_url("openai"), webhook_secret=secret)
    by_batch: dict[str, Any] = {}
    for got in sink.on("/openai"):
        event = sdk.webhooks.unwrap(got.body, got.headers)
        assert isinstance(
            event,
            (BatchCancelledWebhookEvent, BatchCompletedWebhookEvent, BatchFailedWebhookEvent, BatchExpiredWebhookEvent),
        ), event
        assert standardwebhooks.Webhook(secret).verify(got.body, got.headers) == json.loads(got.body)
        by_batch[event.data.id] = event
        # the SDK's unwrap does not validate; its models do, strictly, field by field
        strict = type(event).model_validate_json(got.body, strict=True)
        assert strict.object == "event" and strict.id.startswith("evt_") and strict.created_at > 0
        assert got.headers["webhook-id"].startswith("wh_") and got.headers["webhook-signature"].startswith("v1,")
        assert got.headers["user-agent"] == "OpenAI/1.0 (+https://platform.openai.com/docs/webhooks)"
        assert got.headers["content-type"] == "application/json"
        with pytest.raises(InvalidWebhookSignatureError):
            sdk.webhooks.unwrap(got.body, got.headers, secret=_whsec())
        with pytest.raises(standardwebhooks.WebhookVerificationError):
            standardwebhooks.Webhook(_whsec()).verify(got.body, got.headers)
    assert {batch_id: type(by_batch[batch_id]) for batch_id in ids.values()} == {
        ids[final]: cls for final, cls in expected.items()
    }
    assert {by_batch[ids[final]].type for final in expected} == {f"batch.{final}" for final in expected}
    for batch_id in ids.values():
        _no_polls(emu, "openai", batch_id)
        [cancel] = emu.requests(dialect="openai", batch_id=batch_id)
        [delivery] = emu.deliveries(batch_id=batch_id)
        assert delivery["outcome"] == "delivered" and delivery["status"] == 200 and delivery["attempt"] == 1
        assert delivery["changed_mono"] - cancel["t_mono"] >= CANCELLING_S  # not before the cancel had ended
    assert emu.stats()["push"]["delivered"] == {"openai": 4}


def test_openai_raw_secret_is_its_own_bytes_as_the_openai_sdk_reads_it(emu: Emulator, sink: Sink) -> None:
    secret = "my-plain-openai-secret"  # no whsec_ prefix: OpenAI's SDK uses the raw bytes, not base64
    emu.push_to("openai", sink.url + "/raw", secret=secret, retry=FAST)
    batch_id = emu.create_batch("openai", cancelling_s=0.05)
    _openai_cancel(emu, batch_id)
    until_sync(lambda: sink.on("/raw"), 10, "the delivery", interval=0.02)
    [got] = sink.on("/raw")
    event = OpenAI(api_key=DEFAULT_KEY, base_url=emu.base_url("openai"), webhook_secret=secret).webhooks.unwrap(
        got.body, got.headers
    )
    assert isinstance(event, BatchCancelledWebhookEvent) and event.data.id == batch_id
    # the same bytes given as a key (or base64 after whsec_) verify too: the emulator signed with exactly them
    standardwebhooks.Webhook(secret.encode()).verify(got.body, got.headers)
    as_whsec = "whsec_" + base64.b64encode(secret.encode()).decode()
    OpenAI(api_key=DEFAULT_KEY, webhook_secret=as_whsec).webhooks.verify_signature(got.body, got.headers)
    for wrong in ("my-plain-openai-secreT", _whsec()):
        with pytest.raises(InvalidWebhookSignatureError):
            OpenAI(api_key=DEFAULT_KEY, webhook_secret=wrong).webhooks.unwrap(got.body, got.headers)


def test_gemini_deliveries_pass_standardwebhooks_and_a_cancel_sends_nothing(emu: Emulator, sink: Sink) -> None:
    secret = base64.b64encode(os.urandom(24)).decode()  # Gemini's secret is base64, with or without whsec_
    emu.push_to("gemini", sink.url + "/gemini", secret=secret, retry=FAST)
    # the cancelled one ends first, so once the others arrived its silence is a fact, not a hope
    cancelled = emu.create_batch("gemini", cancelling_s=0.05, final="cancelled")
    others = {
        final: emu.create_batch("gemini", cancelling_s=CANCELLING_S, final=final)
        for final in ("completed", "failed", "expired")
    }
    with httpx.Client(base_url=emu.base_url("gemini"), headers={"x-goog-api-key": DEFAULT_KEY}) as client:
        for batch_id in (cancelled, *others.values()):
            assert client.post(f"/batches/{batch_id}:cancel").status_code == 200
    until_sync(lambda: len(sink.on("/gemini")) == 3, 10, "three Gemini deliveries", interval=0.02)

    official = set(get_args(get_args(WebhookSubscribedEvent)[0]))  # google-genai's own event enum
    seen: dict[str, str] = {}
    for got in sink.on("/gemini"):
        body = standardwebhooks.Webhook(secret).verify(got.body, got.headers)
        assert standardwebhooks.Webhook("whsec_" + secret).verify(got.body, got.headers) == body
        assert body["type"] in official and body["version"] == "v1" and body["timestamp"].endswith("Z")
        assert set(body) == {"type", "version", "timestamp", "data"} and set(body["data"]) == {"id"}
        seen[body["data"]["id"]] = body["type"]
        with pytest.raises(standardwebhooks.WebhookVerificationError):
            standardwebhooks.Webhook(base64.b64encode(os.urandom(24)).decode()).verify(got.body, got.headers)
    assert seen == {
        f"batches/{others['completed']}": "batch.succeeded",
        f"batches/{others['failed']}": "batch.failed",
        f"batches/{others['expired']}": "batch.expired",
    }
    assert emu.batch("gemini", cancelled)["status"] == "cancelled" and emu.deliveries(batch_id=cancelled) == []
    _no_polls(emu, "gemini", cancelled)


def test_bedrock_sends_the_eventbridge_event_of_every_status_change(emu: Emulator, sink: Sink) -> None:
    emu.push_to("bedrock", sink.url + "/bedrock", secret="events-token", header="X-Bcw-Token", retry=FAST)
    job = emu.create_batch("bedrock", cancelling_s=CANCELLING_S)
    client = _bedrock(emu)
    client.stop_model_invocation_job(jobIdentifier=job)
    until_sync(lambda: len(sink.on("/bedrock")) == 2, 10, "Stopping and Stopped", interval=0.02)

    events = [json.loads(got.body) for got in sink.on("/bedrock")]
    assert [e["detail"]["status"] for e in events] == ["Stopping", "Stopped"]
    arn = f"arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/{job}"
    for got, event in zip(sink.on("/bedrock"), events, strict=True):
        assert got.headers["x-bcw-token"] == "events-token" and "webhook-signature" not in got.headers
        assert event["source"] == "aws.bedrock" and event["detail-type"] == "Batch Inference Job State Change"
        assert event["version"] == "0" and event["account"] == "123456789012" and event["region"] == "us-east-1"
        assert event["resources"] == [arn] and event["detail"]["batchJobArn"] == arn
        assert event["detail"]["batchJobName"] == client.get_model_invocation_job(jobIdentifier=job)["jobName"]
        assert set(event["detail"]) == {
            "version",
            "accountId",
            "batchJobName",
            "batchJobArn",
            "batchModelId",
            "status",
            "failureMessage",
            "creationTime",
        }
    assert len({e["id"] for e in events}) == 2  # one event id per change, kept across its retries


def test_a_failed_delivery_is_retried_with_the_same_id_and_a_fresh_signature(emu: Emulator, sink: Sink) -> None:
    secret = _whsec()
    sink.answers["/flaky"] = [500, 503]
    # 0.35 s, then 0.7 s: the first and the third attempt are over a second apart, so their timestamps differ
    emu.push_to("openai", sink.url + "/flaky", secret=secret, retry=PushRetry(initial_s=0.35, max_attempts=5))
    batch_id = emu.create_batch("openai", cancelling_s=0.05)
    _openai_cancel(emu, batch_id)
    until_sync(lambda: len(sink.on("/flaky")) == 3, 10, "three attempts", interval=0.02)

    attempts = sink.on("/flaky")
    assert len({a.headers["webhook-id"] for a in attempts}) == 1
    assert len({a.body for a in attempts}) == 1  # the same event, evt_ id and created_at included
    stamps = [int(a.headers["webhook-timestamp"]) for a in attempts]
    assert stamps == sorted(stamps) and stamps[0] < stamps[-1]
    assert len({a.headers["webhook-signature"] for a in attempts}) == len(set(stamps))
    sdk = OpenAI(api_key=DEFAULT_KEY, webhook_secret=secret)
    for attempt in attempts:
        sdk.webhooks.verify_signature(attempt.body, attempt.headers)  # each one re-signed over its own timestamp
    records = emu.deliveries(batch_id=batch_id)
    assert [(r["attempt"], r["status"], r["outcome"]) for r in records] == [
        (1, 500, "retry"),
        (2, 503, "retry"),
        (3, 200, "delivered"),
    ]
    assert [r["webhook_timestamp"] for r in records] == stamps
    assert {r["delivery_id"] for r in records} == {attempts[0].headers["webhook-id"]}


def test_unreachable_receivers_are_retried_until_the_policy_gives_up(emu: Emulator, sink: Sink) -> None:
    with socket.socket() as closed:  # a port nobody listens on: connection refused
        closed.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}/gone"
    emu.push_to("openai", dead, secret=_whsec(), retry=PushRetry(initial_s=0.05, max_attempts=3))
    # Bedrock: EventBridge drops an event a 4xx other than 401/407/409/429 refused, and retries a 429
    sink.answers["/bedrock"] = [429, 400]
    emu.push_to("bedrock", sink.url + "/bedrock", secret="t", retry=FAST)
    batch_id = emu.create_batch("openai", cancelling_s=0.05)
    job = emu.create_batch("bedrock", cancelling_polls=0)
    _openai_cancel(emu, batch_id)
    _bedrock(emu).stop_model_invocation_job(jobIdentifier=job)  # cancelling_polls=0 and no poll: only Stopping
    until_sync(lambda: len(emu.deliveries(batch_id=batch_id)) == 3, 10, "three refused attempts", interval=0.02)
    until_sync(lambda: len(emu.deliveries(batch_id=job)) == 2, 10, "the Stopping event's attempts", interval=0.02)

    refused = emu.deliveries(batch_id=batch_id)
    assert [r["outcome"] for r in refused] == ["retry", "retry", "gave_up"]
    assert all(r["status"] is None and "Connect" in (r["error"] or "") for r in refused)
    stopping = emu.deliveries(batch_id=job)
    assert [(r["event"], r["status"], r["outcome"]) for r in stopping] == [
        ("Stopping", 429, "retry"),
        ("Stopping", 400, "dropped"),
    ]
    push = emu.stats()["push"]
    assert push["undelivered"] == {"openai": 1, "bedrock": 1} and push["attempts"] == {"openai": 3, "bedrock": 2}


def test_a_burst_of_timed_cancels_is_delivered_once_each_without_polls(emu: Emulator, sink: Sink) -> None:
    emu.push_to("openai", sink.url + "/burst", secret=_whsec(), retry=FAST)
    ids = emu.create_batches("openai", 100, cancelling_s=CANCELLING_S)
    with httpx.Client(base_url=emu.base_url("openai"), headers={"authorization": f"Bearer {DEFAULT_KEY}"}) as client:
        for batch_id in ids:
            assert client.post(f"/batches/{batch_id}/cancel").status_code == 200
    until_sync(lambda: len(sink.on("/burst")) >= len(ids), 20, "every delivery", interval=0.05)
    delivered = sorted(json.loads(got.body)["data"]["id"] for got in sink.on("/burst"))
    assert delivered == sorted(ids)
    assert emu.stats()["push"]["events"] == {"openai": len(ids)}
    assert emu.stats()["count"].get("dialect:openai") == len(ids)  # the cancels, and not one poll


@pytest.mark.parametrize(
    ("target", "complaint"),
    [
        ({"dialect": "openai", "url": "http://x/y", "secret": "s", "header": "x-token"}, "header is for bedrock"),
        ({"dialect": "gemini", "url": "http://x/y", "secret": "whsec_!!!!"}, "base64"),
        ({"dialect": "openai", "url": "ftp://x/y", "secret": "s"}, "http"),
        ({"dialect": "mistral", "url": "http://x/y", "secret": "s"}, "dialect"),
        ({"dialect": "openai", "url": "http://x/y", "secret": ""}, "secret"),
    ],
)
def test_a_push_target_that_cannot_work_is_refused_without_echoing_the_secret(
    emu: Emulator, target: dict[str, Any], complaint: str
) -> None:
    refused = httpx.post(emu.url + "/_admin/push", json=target)  # the raw admin body: wrong values can be sent
    assert refused.status_code == 400 and complaint in refused.json()["error"]
    assert target["secret"] in ("", "s") or target["secret"] not in refused.text
    assert emu.stats()["push"]["targets"] == []
