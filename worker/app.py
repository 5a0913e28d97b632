"""Wiring and lifecycle: build every part from configuration, run until SIGTERM, drain, exit 0.

Start-up order matters for the 3 a.m. reader: configuration and secrets are checked before any network
connection, so a typo fails in a second with one line instead of after a broker timeout; the producer
starts before the consumer, so no command can be fetched without a way to publish its outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from worker.config import ProvidersFile, Settings, load_providers
from worker.dispatch import Dispatcher
from worker.follow import FollowPolicy, Follows
from worker.kafka.connection import check_connection, security_kwargs
from worker.kafka.consumer import CommandConsumer, kafka_consumer
from worker.kafka.follow_store import FollowStore, check_topics
from worker.kafka.producer import EventProducer
from worker.kafka.signals import SignalListener
from worker.providers import ProviderClient, build_clients
from worker.signing import SignatureVerifier
from worker.sweep.ownership import KeptState
from worker.sweep.service import Selectors
from worker.telemetry import CommandTracing, TraceHeaders, configure_tracing, metrics
from worker.telemetry.health import HealthServer

__all__ = ["Worker", "check_config", "run", "signature_verifier"]

log = logging.getLogger("worker.app")


def check_config(settings: Settings) -> tuple[ProvidersFile, dict[str, ProviderClient]]:
    """Load the providers file, every API key and the Kafka security settings; raises ``ConfigError``."""
    providers, clients, _ = _load(settings)
    return providers, clients


def _load(settings: Settings) -> tuple[ProvidersFile, dict[str, ProviderClient], SignatureVerifier | None]:
    security_kwargs(settings)  # TLS files and SASL password are read here too, before any connection
    providers = load_providers(settings.providers_file)
    verifier = signature_verifier(providers, settings)  # a missing publishing key fails now, not on a command
    return providers, build_clients(providers), verifier


def signature_verifier(providers: ProvidersFile, settings: Settings) -> SignatureVerifier | None:
    """The verifier for accounts with ``signing_keys_*``; ``None`` when no account requires signatures."""
    keys = providers.load_signing_keys()
    return SignatureVerifier(keys, max_age_s=settings.signed_command_max_age_s) if keys else None


class Worker:
    """One worker process's parts, started and stopped together."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.providers, self.clients, verifier = _load(settings)
        self.producer = EventProducer(settings, TraceHeaders())
        policy = FollowPolicy(
            initial_interval=settings.follow_initial_interval_s,
            max_interval=settings.follow_max_interval_s,
            max_follow=settings.follow_max_s,
            intent_delay=settings.follow_intent_delay_s,
        )
        accounts = {name: frozenset(p.accounts) for name, p in self.providers.providers.items()}
        metrics.selector_series(accounts)
        push_intervals = self.providers.push_intervals()
        metrics.push_series({provider for provider, _ in push_intervals})
        self.store = FollowStore(settings, self.producer)
        tracing = CommandTracing(settings.group_id)
        self.follows = Follows(
            self.clients,
            accounts,
            self.producer,
            self.store,
            policy,
            tracing=tracing,
            runners_for=lambda provider, account: self.clients[provider].gates[account].max_concurrency,
            push_intervals=push_intervals,
        )
        # Accounts whose provider pushes: every signal is read here, the follows of it held here poll at once.
        self.signals = SignalListener(settings, settings.signals_topic, self.follows.signal) if push_intervals else None
        # Selectors publish their children to the commands topic and keep standing kills beside the follows.
        self.selectors = Selectors(self.clients, self.producer, self.producer, self.store)
        self.dispatcher = Dispatcher(
            self.clients,
            accounts,
            self.producer,
            self.follows,
            max_command_bytes=settings.max_command_bytes,
            tracing=tracing,
            verifier=verifier,
            selectors=self.selectors,
        )
        kept = KeptState(self.follows, self.selectors)
        self.consumer = CommandConsumer(
            settings, kafka_consumer(settings), sink=self.dispatcher, follows=kept, store=self.store
        )
        metrics.COMMANDS_IN_FLIGHT.set_function(lambda: self.dispatcher.in_flight)
        metrics.FOLLOWS_IN_FLIGHT.set_function(lambda: self.follows.following)
        metrics.OLDEST_FOLLOW_AGE.set_function(self.follows.oldest_follow_age)
        metrics.ACCOUNTS.read = self._account_readings
        self.stop = asyncio.Event()
        self.health = HealthServer(settings.metrics_host, settings.metrics_port)
        self._producer_started = False
        self.health.add_check("config_loaded", lambda: True)
        self.health.add_check("producer_connected", lambda: self._producer_started)
        self.health.add_check("publishing", self.producer.healthy)
        self.health.add_check("group_joined", self.consumer.joined.is_set)

    def _account_readings(self) -> list[metrics.AccountReading]:
        schedulers = self.follows.schedulers()
        out = []
        for name, client in self.clients.items():
            for account, gate in client.gates.items():
                scheduler = schedulers.get((name, account))
                out.append(
                    metrics.AccountReading(
                        provider=name,
                        account=account,
                        budget=gate.adaptive.ceiling,
                        allowed=gate.rate,
                        in_flight=gate.in_flight,
                        waiting=tuple(gate.waiting),
                        scheduled=scheduler.scheduled if scheduler else 0,
                        overdue=scheduler.overdue() if scheduler else 0,
                    )
                )
        return out

    async def run(self) -> None:
        if self.settings.metrics_port:
            await self.health.start()
        # One connection of our own first: a refused password or certificate becomes one clear line
        # (KafkaStartError) instead of aiokafka's per-attempt error log and a generic bootstrap failure.
        try:
            await check_connection(self.settings)
            # a follows topic that cannot keep follows, or push without a signals topic: exit 2 now
            await check_topics(self.settings, signals=self.signals is not None)
        except BaseException:
            for client in self.clients.values():
                await client.aclose()
            await self.health.stop()
            raise
        await self.producer.start()
        self._producer_started = True
        listening: asyncio.Task[None] | None = None
        try:
            if self.signals is not None:  # its end offsets are taken before the group is joined (kafka/signals.py)
                await self.signals.start()
                listening = asyncio.create_task(self.signals.run(self.stop), name="signals")
            await self.consumer.start()
            log.info(
                "worker started: consuming %s as group %s, %d providers, on the %s event loop",
                self.settings.commands_topic,
                self.settings.group_id,
                len(self.clients),
                type(asyncio.get_running_loop()).__module__.split(".")[0],
            )
            await self.consumer.run(self.stop)
        finally:
            if listening is not None:
                self.stop.set()
                await listening
            await self.producer.stop()
            for client in self.clients.values():
                await client.aclose()
            await self.health.stop()
            metrics.ACCOUNTS.read = tuple
        log.info("worker stopped")


async def run(settings: Settings) -> int:
    tracer_provider = configure_tracing()
    worker = Worker(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, worker.stop.set)
    try:
        await worker.run()
    finally:
        if tracer_provider is not None:
            tracer_provider.shutdown()  # flushes the last spans
    return 0
