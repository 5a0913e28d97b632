"""``/livez``, ``/readyz`` and ``/metrics`` on one small HTTP port, for Kubernetes probes and Prometheus.

Liveness answers from the event loop itself, so a blocked or dead loop fails the probe; readiness is the
conjunction of the checks the app registers (group joined, producer connected, configuration loaded), each
named in the response body so ``kubectl describe`` shows which one is failing. The same checks are exported
as ``bcw_ready{check}``, computed when ``/metrics`` is scraped, so an alert can tell "no worker ready" and
which check fails (``group_joined`` 0 everywhere: the group has no members) without a probe of its own.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from worker.telemetry import metrics

__all__ = ["HealthServer"]


class HealthServer:
    """The probe and metrics port (see the module docstring); ``add_check`` registers a named readiness check."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry = REGISTRY) -> None:
        self._host = host
        self._port = port
        self._registry = registry
        self._checks: dict[str, Callable[[], bool]] = {}
        self._runner: web.AppRunner | None = None

    def add_check(self, name: str, check: Callable[[], bool]) -> None:
        self._checks[name] = check

    @property
    def port(self) -> int:
        if self._runner is None or not self._runner.addresses:
            return self._port
        return int(self._runner.addresses[0][1])

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/livez", self._livez)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _livez(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    def _results(self) -> dict[str, bool]:
        return {name: bool(check()) for name, check in self._checks.items()}

    async def _readyz(self, request: web.Request) -> web.Response:
        results = self._results()
        ready = all(results.values())
        return web.Response(
            status=200 if ready else 503,
            text=json.dumps({"ready": ready, "checks": results}) + "\n",
            content_type="application/json",
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        for name, passed in self._results().items():
            metrics.READY.labels(name).set(1 if passed else 0)
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
