"""Operating the worker: the publisher's trace continues through it, metrics move, probes answer.

Spans are received the way a collector would: the worker process exports real OTLP/HTTP to a tiny
receiver in the test, which decodes the protobuf with OpenTelemetry's own message classes.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from opentelemetry import propagate
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider

from tests.support.events import EventLog, publish_commands
from tests.support.stack import StackFactory
from worker.telemetry import metrics
from worker.telemetry.health import HealthServer

CONSUMER, CLIENT = 5, 3  # OTLP span kinds


class Receiver:
    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        req = ExportTraceServiceRequest()
        req.ParseFromString(await request.read())
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                self.spans.extend(ss.spans)
        return web.Response(body=b"", content_type="application/x-protobuf")

    def in_trace(self, trace_id: str) -> list[Any]:
        return [s for s in self.spans if s.trace_id.hex() == trace_id]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    app = web.Application()
    app.router.add_post("/v1/traces", r.handle)
    r.runner = web.AppRunner(app)
    await r.runner.setup()
    site = web.TCPSite(r.runner, "127.0.0.1", 0)
    await site.start()
    r.port = r.runner.addresses[0][1]
    yield r
    await r.runner.cleanup()


def metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(r"^(\w+)(?:\{(.*)\})? ([0-9.eE+-]+)$", line)
        if m and m.group(1) == name:
            got = ",".join(sorted((m.group(2) or "").split(","))) if m.group(2) else ""
            if got == want:
                return float(m.group(3))
    return 0.0


async def test_trace_continues_from_publisher_through_worker_to_events(
    make_stack: StackFactory, receiver: Receiver
) -> None:
    s = make_stack(partitions=1)
    worker = s.start_worker(
        name="traced",
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"http://127.0.0.1:{receiver.port}/v1/traces",
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    before = worker.get("/metrics")[1]
    batch = s.emulator.create_batch(
        "siliconflow", f"batch_{uuid.uuid4().hex[:10]}", faults=[{"kind": "overload", "count": 2}]
    )

    publisher = TracerProvider().get_tracer("e2e-publisher")
    with publisher.start_as_current_span("publish cancel") as span:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        ctx = span.get_span_context()
    trace_id, parent_id = format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
    headers = [(k, v.encode()) for k, v in carrier.items()]

    async with EventLog(s.bootstrap, s.events) as log:
        (cid,) = await publish_commands(
            s.bootstrap, s.commands, [{"provider": "siliconflow", "batch_id": batch}], headers=headers
        )
        await log.wait_finals([cid], timeout=60)
        for p in log.by_command[cid]:
            assert p.headers["traceparent"].decode().split("-")[1] == trace_id

        def spans_arrived() -> bool:
            spans = receiver.in_trace(trace_id)
            return any(x.kind == CONSUMER for x in spans) and sum(x.kind == CLIENT for x in spans) >= 4

        await log.wait_until(spans_arrived, timeout=30, what="the worker's spans at the OTLP receiver")

    spans = receiver.in_trace(trace_id)
    (process,) = [x for x in spans if x.kind == CONSUMER]
    assert process.parent_span_id.hex() == parent_id
    assert process.name == f"process {s.commands}"
    attrs = {a.key: a.value for a in process.attributes}
    assert attrs["messaging.system"].string_value == "kafka"
    assert attrs["messaging.consumer.group.name"].string_value == s.group
    assert attrs["bcw.outcome"].string_value == "cancelled"
    cancel_call = next(x for x in spans if x.name == "cancel batch")
    assert cancel_call.parent_span_id == process.span_id
    attempts = [x for x in spans if x.kind == CLIENT and x.parent_span_id == cancel_call.span_id]
    assert len(attempts) == 3  # two 50505 overloads, then the cancel that went through
    assert [e.name for e in cancel_call.events] == ["retry", "retry"]

    after = worker.get("/metrics")[1]
    delta = metric(after, "bcw_commands_total", outcome="cancelled") - metric(
        before, "bcw_commands_total", outcome="cancelled"
    )
    assert delta == 1
    assert metric(after, "bcw_retries_total", provider="siliconflow", cause="http_503") == 2
    assert metric(after, "bcw_provider_requests_total", provider="siliconflow", dialect="siliconflow",
                  status="503", result="retryable") == 2  # fmt: skip
    assert metric(after, "bcw_command_final_seconds_count") == 1
    assert metric(after, "bcw_cancel_accepted_seconds_count") == 1


async def test_malformed_traceparent_is_ignored_and_starts_a_new_trace(make_stack: StackFactory) -> None:
    s = make_stack(partitions=1)
    worker = s.start_worker(name="forged")
    batch = s.emulator.create_batch("openai", f"batch_{uuid.uuid4().hex[:10]}")
    async with EventLog(s.bootstrap, s.events) as log:
        (cid,) = await publish_commands(
            s.bootstrap, s.commands, [{"provider": "openai", "batch_id": batch}],
            headers=[("traceparent", b"00-not-a-trace-\xff")],
        )  # fmt: skip
        await log.wait_finals([cid], timeout=30)
        (final,) = log.finals(cid)
        assert final["outcome"] == "cancelled"
        tp = log.by_command[cid][-1].headers["traceparent"].decode()
        assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}", tp)
    assert worker.get("/readyz")[0] == 200


async def test_readyz_names_each_check_and_fails_until_all_pass() -> None:
    assert metrics.COMMANDS  # registered on import, so /metrics describes it even before the first command
    health = HealthServer("127.0.0.1", 0)
    joined = False
    health.add_check("config_loaded", lambda: True)
    health.add_check("group_joined", lambda: joined)
    await health.start()
    try:
        import aiohttp

        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{health.port}"
            async with http.get(f"{base}/readyz") as r:
                assert r.status == 503
                assert await r.json() == {"ready": False, "checks": {"config_loaded": True, "group_joined": False}}
            joined = True
            async with http.get(f"{base}/readyz") as r:
                assert r.status == 200
            async with http.get(f"{base}/livez") as r:
                assert r.status == 200
            async with http.get(f"{base}/metrics") as r:
                assert "bcw_commands_total" in await r.text()
    finally:
        await health.stop()
