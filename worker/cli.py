"""``batch-cancel-worker``: run the worker, or check its configuration without connecting to anything."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import TYPE_CHECKING

from aiokafka.errors import KafkaConnectionError
from pydantic import ValidationError

from worker.config import ConfigError, Settings, unknown_settings
from worker.kafka.connection import KafkaStartError
from worker.telemetry import configure_logging
from worker.validation import explain

if TYPE_CHECKING:
    from worker.providers import ProviderClient

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="batch-cancel-worker",
        description="Cancel LLM batch jobs on command from Kafka. Settings come from BCW_* environment variables.",
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", help="consume cancel commands until SIGTERM (the default)")
    sub.add_parser("check-config", help="validate settings, the providers file and every API key, then exit")
    sub.add_parser(
        "webhooks",
        help="receive provider webhooks and EventBridge events, write them as signals for the workers (docs/push.md)",
    )
    args = parser.parse_args(argv)

    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"batch-cancel-worker: bad setting: {explain(exc, env_prefix='BCW_')}", file=sys.stderr)
        return 2
    except ConfigError as exc:  # settings that contradict each other (Kafka security)
        print(f"batch-cancel-worker: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    unknown = unknown_settings(os.environ)
    if unknown:  # pydantic-settings ignores them: a misspelt name would otherwise go unnoticed
        logging.getLogger("worker").warning("ignoring variables that are no setting: %s", ", ".join(unknown))

    from worker import app, process

    try:
        if args.command == "check-config":
            providers, clients = app.check_config(settings)
            asyncio.run(_close(clients))
            names = ", ".join(f"{n} ({p.dialect}: {', '.join(p.accounts)})" for n, p in providers.providers.items())
            print(f"configuration OK: {names}")
            return 0
        if args.command == "webhooks":
            from worker import receiver

            main_coroutine = receiver.run(settings)
        else:
            process.tune_collector(settings.gc_gen0_threshold)
            main_coroutine = app.run(settings)
        return process.run(main_coroutine, settings.event_loop)
    except ConfigError as exc:
        logging.getLogger("worker").error("configuration error: %s", exc)
        print(f"batch-cancel-worker: configuration error: {exc}", file=sys.stderr)
        return 2
    except (KafkaStartError, KafkaConnectionError) as exc:
        # The broker refused us at start (credentials, certificate, address): one line and exit 3 so an
        # orchestrator's restart loop shows the reason, not a traceback. Neither message holds a secret.
        logging.getLogger("worker").error("cannot connect to Kafka: %s", exc)
        print(f"batch-cancel-worker: cannot connect to Kafka: {exc}", file=sys.stderr)
        return 3


async def _close(clients: dict[str, ProviderClient]) -> None:
    for client in clients.values():
        await client.aclose()
