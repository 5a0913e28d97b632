"""The receiver's HTTP side: ``POST /webhooks/{provider}/{account}``, each delivery verified, then made a signal.

The order of a delivery's checks is the order of their cost, and no step trusts what the previous one did not
prove: the route (a configured account with push, else 404), the size (413 before the body is read past the
limit), the signature (401; nothing of the body is parsed before it), the shape (400, or 200 ``ignored`` for a
verified event that is not a batch's), the replay memory (200 ``replayed``), then the signal, written to Kafka
with ``acks=all`` before the answer: a 2xx means the signal is durable, and a write that fails answers 503 so
the provider delivers again (OpenAI retries for up to 72 h, Gemini 24 h; EventBridge per its retry policy).

Nothing of a refused delivery is logged but its route, result and reason: no body, no header, no secret.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from aiohttp import web
from pydantic import ValidationError

from worker.contract import BatchSignal
from worker.telemetry import metrics
from worker.webhooks.payloads import Malformed, parse
from worker.webhooks.replay import SeenDeliveries
from worker.webhooks.verify import TOLERANCE_S, Refused, Verifier

__all__ = ["PATH", "Receiver", "Route", "SignalSink"]

log = logging.getLogger("worker.webhooks")

PATH = "/webhooks/{provider}/{account}"


class SignalSink(Protocol):
    """Where signals go (``worker.kafka.signals.SignalWriter``): returns once every in-sync replica has it, and
    raises when it cannot (the broker unreachable, the topic refusing): then the provider must deliver again."""

    async def write(self, signal: BatchSignal) -> None: ...


@dataclass(frozen=True, slots=True)
class Route:
    provider: str
    account: str
    dialect: str
    verifier: Verifier


class Receiver:
    """The webhook port's one route over ``routes`` (by provider and account); ``app()`` is what is served."""

    def __init__(
        self,
        routes: Mapping[tuple[str, str], Route],
        sink: SignalSink,
        *,
        max_body_bytes: int,
        seen: SeenDeliveries | None = None,
    ) -> None:
        self._routes = routes
        self._sink = sink
        self._max_body = max_body_bytes
        self._seen = seen or SeenDeliveries(window_s=2 * TOLERANCE_S)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self._max_body)
        app.router.add_post(PATH, self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        route = self._routes.get((request.match_info["provider"], request.match_info["account"]))
        provider = route.provider if route is not None else "unknown"
        try:
            status, result = await self._deliver(route, request)
        except Refused as exc:
            status, result = exc.status, exc.result
            log.warning(
                "delivery refused for %s: %s (%s)",
                f"{route.provider}/{route.account}" if route is not None else "an unconfigured path",
                result,
                exc,
                extra={"event": "webhook_refused", "result": result, "provider": provider},
            )
        metrics.WEBHOOK_DELIVERIES.labels(provider, result).inc()
        metrics.WEBHOOK_SECONDS.observe(time.perf_counter() - started)
        return web.json_response({"result": result}, status=status)

    async def _deliver(self, route: Route | None, request: web.Request) -> tuple[int, str]:
        if route is None:
            raise Refused(404, "unknown_account", "no account with push is configured at this path")
        if request.content_length is not None and request.content_length > self._max_body:
            raise Refused(413, "too_large", f"body over {self._max_body} bytes")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:  # chunked, without a length: aiohttp stops at the limit
            raise Refused(413, "too_large", f"body over {self._max_body} bytes") from None
        headers = {k.lower(): v for k, v in request.headers.items()}
        header_id = route.verifier.verify(body, headers)
        try:
            change = parse(route.dialect, body)
        except Malformed as exc:
            raise Refused(400, "malformed", str(exc)) from None
        if change is None:
            return 200, "ignored"
        delivery_id = header_id or change.delivery_id
        assert delivery_id is not None  # a verifier without an id means the payload's, which parse requires
        if delivery_id in self._seen:
            return 200, "replayed"
        try:
            signal = BatchSignal(
                provider=route.provider,
                account=route.account,
                batch_id=change.batch_id,
                event=change.event,
                delivery_id=delivery_id,
                occurred_at=change.occurred_at,
                received_at=datetime.now(UTC),
            )
        except ValidationError:
            raise Refused(
                400, "malformed", "the batch id, event or delivery id is not one a command could carry"
            ) from None
        try:
            await self._sink.write(signal)
        except Exception as exc:  # noqa: BLE001 - whatever kept the signal from Kafka, the provider must retry
            raise Refused(503, "unavailable", f"the signal could not be written: {type(exc).__name__}") from None
        self._seen.remember(delivery_id)
        log.info(
            "signal for %s: %s",
            signal.key,
            signal.event,
            extra={"event": "webhook_signal", "batch_key": signal.key, "delivery_id": delivery_id},
        )
        return 200, "delivered"
