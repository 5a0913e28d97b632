"""``batch-cancel-worker webhooks``: the process that faces the providers' network and turns their pushes into
signals (docs/push.md). A worker never listens for providers; this process never calls one.

Built from the worker's own settings and providers file, so one ConfigMap serves both: a route for every
account with ``push:``, its secrets read at start (a missing one fails in a second, exit 2), one idempotent
``acks=all`` producer for the signals topic, and the probe and metrics port the worker has. SIGTERM stops taking
deliveries, lets those in hand finish (their signals written and answered), then exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from aiohttp import web

from worker.config import DEFAULT_PUSH_HEADER, ConfigError, ProvidersFile, Settings, load_providers
from worker.kafka.connection import check_connection, security_kwargs
from worker.kafka.signals import SignalWriter
from worker.telemetry import metrics
from worker.telemetry.health import HealthServer
from worker.webhooks import HeaderSecret, Receiver, Route, StandardWebhooks, Verifier

__all__ = ["WebhookReceiver", "routes", "run"]

log = logging.getLogger("worker.receiver")

#: Deliveries in hand at SIGTERM get this long to be written and answered.
SHUTDOWN_GRACE_S = 15.0


def routes(providers: ProvidersFile) -> dict[tuple[str, str], Route]:
    """One route per account whose provider pushes, with its verifier; the secrets are read now."""
    out = {}
    for name, provider in providers.providers.items():
        for account, config in provider.accounts.items():
            if config.push is None:
                continue
            secrets = config.push.load_secrets()
            verifier: Verifier
            if provider.dialect == "bedrock":
                verifier = HeaderSecret(config.push.header or DEFAULT_PUSH_HEADER, secrets)
            else:
                verifier = StandardWebhooks(secrets, raw_without_prefix=provider.dialect == "openai")
            out[name, account] = Route(name, account, provider.dialect, verifier)
    return out


class WebhookReceiver:
    """The receiver's parts, started and stopped together."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        security_kwargs(settings)  # TLS files and the SASL password are read before any connection
        self.routes = routes(load_providers(settings.providers_file))
        if not self.routes:
            raise ConfigError(
                f"no account in {settings.providers_file} configures push: there is nothing to receive (docs/push.md)"
            )
        metrics.webhook_series({provider for provider, _ in self.routes})
        self.writer = SignalWriter(settings, settings.signals_topic, settings.webhooks_write_timeout_s)
        self.receiver = Receiver(self.routes, self.writer, max_body_bytes=settings.webhooks_max_body_bytes)
        self.stop = asyncio.Event()
        self.health = HealthServer(settings.metrics_host, settings.metrics_port)
        self._listening = False
        self.health.add_check("config_loaded", lambda: True)
        self.health.add_check("listening", lambda: self._listening)
        self.health.add_check("writing_signals", lambda: not self.writer.failing)

    async def run(self) -> None:
        if self.settings.metrics_port:
            await self.health.start()
        runner = web.AppRunner(self.receiver.app(), access_log=None, shutdown_timeout=SHUTDOWN_GRACE_S)
        try:
            await check_connection(self.settings)
            await self.writer.start()
            await runner.setup()
            site = web.TCPSite(runner, self.settings.webhooks_host, self.settings.webhooks_port)
            await site.start()
            self._listening = True
            log.info(
                "receiving webhooks on %s:%d for %s; signals go to %s",
                self.settings.webhooks_host,
                self.settings.webhooks_port,
                ", ".join(f"{p}/{a}" for p, a in sorted(self.routes)),
                self.settings.signals_topic,
            )
            await self.stop.wait()
        finally:
            self._listening = False
            await runner.cleanup()  # no new deliveries; those in hand finish first
            await self.writer.stop()
            await self.health.stop()
        log.info("webhook receiver stopped")


async def run(settings: Settings) -> int:
    receiver = WebhookReceiver(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, receiver.stop.set)
    await receiver.run()
    return 0
