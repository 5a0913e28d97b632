"""``batch-cancel``: publish a cancel command from a shell, optionally wait for its outcome, watch events, or
list the live follows (``batch-cancel follows``).

For operators and scripts that are not Python: ``batch-cancel publish --provider openai --batch-id b1
--wait`` exits with a code that says how the cancel ended, so a CI job or a runbook can branch on it.

Exit codes (stable, documented in ``--help``):

====  ==========================================================================================
0     published; with ``--wait``: the batch is stopped (cancelled, completed, failed, expired) or
      the cancel was ``accepted`` (``follow: false``)
1     Kafka error (broker unreachable, topic missing)
2     bad arguments or an invalid command (nothing was published)
3     ``rejected`` by the provider (401, 403, 404, …)
4     ``gave_up``: retries exhausted or follow timeout
5     ``invalid``: the worker dead-lettered the command
6     ``--timeout`` elapsed before the final event arrived
130   interrupted (Ctrl-C, SIGINT); ``watch`` exits 0, since that is how a watch ends
143   terminated (SIGTERM); ``watch`` exits 0
====  ==========================================================================================

Every command installs its own SIGINT and SIGTERM handlers: a process started from a shell's background job
or a CI runner inherits SIGINT *ignored*, and Python's ``KeyboardInterrupt`` alone would then never stop it.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import signal
import socket
import sys
from collections.abc import Coroutine
from typing import Any

from aiokafka.errors import KafkaError
from opentelemetry import trace
from pydantic import ValidationError

from worker.config import ConfigError, KafkaConnection
from worker.contract import BatchStateEvent, InvalidCommand
from worker.contract.topics import FOLLOWS_TOPIC
from worker.kafka.connection import security_kwargs
from worker.publisher import kill_cli
from worker.publisher.client import (
    DEFAULT_COMMANDS_TOPIC,
    DEFAULT_EVENTS_TOPIC,
    EventFollower,
    OutcomeTimeout,
    build_command,
    parse_event,
    publish_cancel,
)
from worker.publisher.follows import format_follows, live_follows
from worker.validation import explain

__all__ = ["EXIT_CODES", "exit_code", "format_event", "main"]

DEFAULT_FOLLOWS_TOPIC = FOLLOWS_TOPIC
EXIT_OK, EXIT_KAFKA, EXIT_USAGE, EXIT_TIMEOUT, EXIT_INTERRUPTED = 0, 1, 2, 6, 130
#: Final outcome -> exit code; every outcome not listed means the batch is no longer running (0).
EXIT_CODES = {"rejected": 3, "gave_up": 4, "invalid": 5}

_EPILOG = """exit codes: 0 ok (cancelled, completed, failed, expired, accepted) | 1 Kafka error |
2 bad arguments / invalid command | 3 rejected | 4 gave_up | 5 invalid | 6 timeout | 130 interrupted |
143 terminated (watch: 0 on either signal).
Defaults come from BCW_KAFKA_BOOTSTRAP_SERVERS, BCW_COMMANDS_TOPIC and BCW_EVENTS_TOPIC."""


def exit_code(final: BatchStateEvent) -> int:
    return EXIT_CODES.get(str(final.outcome), EXIT_OK)


def format_event(event: BatchStateEvent) -> str:
    """One readable line per state change: time, status (or FINAL outcome), batch, and why it failed."""
    at = event.observed_at.isoformat()[11:23]
    what = f"FINAL {event.outcome}" if event.final else str(event.status)
    batch = f"{event.provider}/{event.account}/{event.batch_id}"
    extra = []
    if event.provider_status and event.provider_status != event.status:
        extra.append(f"provider_status={event.provider_status}")
    if event.already_terminal:
        extra.append("already_terminal")
    detail = event.detail
    if detail is not None:
        http = f"HTTP {detail.http_status} " if detail.http_status else ""
        extra.append(f"{http}{detail.code or ''}: {detail.message or ''}".strip())
    line = f"{at:<12}  {what:<18}  {batch}  {event.command_id}"
    return f"{line}  {' '.join(extra)}" if extra else line


def _parser() -> argparse.ArgumentParser:
    env = os.environ.get
    kafka = argparse.ArgumentParser(add_help=False)
    kafka.add_argument("--bootstrap-servers", default=env("BCW_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    kafka.add_argument("--events-topic", default=env("BCW_EVENTS_TOPIC", DEFAULT_EVENTS_TOPIC))
    parser = argparse.ArgumentParser(
        prog="batch-cancel",
        description="Publish batch-cancel commands and follow batch-state events.",
        epilog=_EPILOG,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    pub = sub.add_parser("publish", parents=[kafka], help="publish one cancel command", epilog=_EPILOG)
    pub.add_argument("--provider", required=True)
    pub.add_argument("--account", default="default")
    pub.add_argument("--batch-id", required=True)
    pub.add_argument("--reason")
    pub.add_argument("--requested-by", default=f"{getpass.getuser()}@{socket.gethostname()}")
    pub.add_argument("--no-follow", action="store_true", help="the cancel reply is the final event (accepted)")
    pub.add_argument("--commands-topic", default=env("BCW_COMMANDS_TOPIC", DEFAULT_COMMANDS_TOPIC))
    pub.add_argument("--wait", action="store_true", help="print each state change and exit on the final event")
    pub.add_argument("--timeout", type=float, default=600.0, help="seconds --wait waits (default 600)")
    pub.add_argument(
        "--signing-key-env",
        metavar="VAR",
        help="sign the command with the key in environment variable VAR (accounts that require signed commands)",
    )
    watch = sub.add_parser("watch", parents=[kafka], help="tail batch-state events (Ctrl-C stops)")
    watch.add_argument("--batch-id", help="only events about this batch")
    watch.add_argument("--command-id", help="only events of this command")
    watch.add_argument("--json", action="store_true", help="one JSON event per line instead of a table")
    follows = sub.add_parser("follows", parents=[kafka], help="list the live follows (from the follow-state topic)")
    follows.add_argument("--follows-topic", default=env("BCW_FOLLOWS_TOPIC", DEFAULT_FOLLOWS_TOPIC))
    follows.add_argument("--provider", help="only this provider's follows")
    follows.add_argument("--json", action="store_true", help="one JSON object per follow instead of a table")
    kill_cli.add_parsers(sub, kafka, env)
    return parser


def _setup_tracing() -> None:
    """Give the process a real tracer provider unless the host application set one, so ids are generated.

    Without it the API's no-op tracer produces no ``traceparent`` and the worker's spans start a new trace.
    """
    from opentelemetry.sdk.trace import TracerProvider

    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())


def _say(text: str, *, err: bool = False) -> None:
    print(text, file=sys.stderr if err else sys.stdout, flush=True)


async def _publish(args: argparse.Namespace) -> int:
    tracer = trace.get_tracer("batch-cancel-worker.cli")
    with tracer.start_as_current_span("batch-cancel publish") as span:
        span.set_attributes({"bcw.provider": args.provider, "bcw.batch_id": args.batch_id, "bcw.wait": args.wait})
        # Validated before any connection: a typo in a batch id fails fast (exit 2) even with no broker.
        command = build_command(
            args.provider,
            args.batch_id,
            account=args.account,
            reason=args.reason,
            requested_by=args.requested_by,
            **({"follow": False} if args.no_follow else {}),
        )
        fields = command.model_dump(exclude={"provider", "batch_id", "account", "reason"}, exclude_none=True)

        options = _kafka_options(args)
        signing_key = _signing_key(args.signing_key_env)

        async def send() -> str:
            return await publish_cancel(
                args.bootstrap_servers,
                command.provider,
                command.batch_id,
                account=command.account,
                reason=command.reason,
                topic=args.commands_topic,
                kafka_options=options,
                signing_key=signing_key,
                **fields,
            )

        if not args.wait:
            _say(await send())
            return EXIT_OK
        follower_cm = EventFollower(args.bootstrap_servers, args.events_topic, kafka_options=options)
        async with follower_cm as follower:  # positioned before send
            command_id = await send()
            _say(command_id)
            _say(f"trace {format(span.get_span_context().trace_id, '032x')}; waiting for the outcome…", err=True)
            try:
                final = await follower.outcome(
                    command_id, timeout=args.timeout, on_event=lambda e: _say(format_event(e))
                )
            except OutcomeTimeout as exc:
                _say(f"batch-cancel: timeout: {exc}", err=True)
                return EXIT_TIMEOUT
        code = exit_code(final)
        if code != EXIT_OK:
            detail = final.detail
            http = f"HTTP {detail.http_status} " if detail is not None and detail.http_status else ""
            code_part = f"{detail.code}: " if detail is not None and detail.code else ""
            message = detail.message if detail is not None else None
            _say(f"batch-cancel: {final.outcome}: {http}{code_part}{message}", err=True)
        return code


def _connection(args: argparse.Namespace) -> KafkaConnection:
    """The Kafka connection from the same ``BCW_KAFKA_*`` variables the worker reads, so one environment serves
    both; only those: a publisher's environment may hold anything else (its own tracing exporter included)."""
    try:
        return KafkaConnection(kafka_bootstrap_servers=args.bootstrap_servers)
    except ValidationError as exc:
        raise ConfigError(f"bad setting: {explain(exc, env_prefix='BCW_')}") from None


def _kafka_options(args: argparse.Namespace) -> dict[str, Any]:
    """SASL/TLS for the client (``security_kwargs``: files and the password read now)."""
    return security_kwargs(_connection(args))


def _signing_key(var: str | None) -> bytes | None:
    if var is None:
        return None
    value = os.environ.get(var)
    if not value:
        raise ConfigError(f"--signing-key-env: environment variable {var} is not set or empty")
    return value.encode()


async def _follows(args: argparse.Namespace) -> int:
    settings = _connection(args)
    for line in format_follows(await live_follows(settings, args.follows_topic, args.provider), as_json=args.json):
        _say(line)
    return EXIT_OK


async def _watch(args: argparse.Namespace) -> int:
    async with EventFollower(args.bootstrap_servers, args.events_topic, kafka_options=_kafka_options(args)) as follower:
        _say(f"watching {args.events_topic} from its end; Ctrl-C stops", err=True)
        if not args.json:
            _say(f"{'time':<12}  {'status':<18}  {'provider/account/batch_id'}  command_id")
        while True:
            for _, value in await follower.records(1000):
                event = parse_event(value)
                if event is None or not _matches(event, args):
                    continue
                # --json: the event as the worker wrote it (fields this client does not know included), compact
                _say(json.dumps(json.loads(value or b""), separators=(",", ":")) if args.json else format_event(event))


def _matches(event: BatchStateEvent, args: argparse.Namespace) -> bool:
    return (args.batch_id is None or event.batch_id == args.batch_id) and (
        args.command_id is None or event.command_id == args.command_id
    )


async def _until_signalled(work: Coroutine[Any, Any, int], *, stopped: int | None) -> int:
    """Run ``work``; SIGINT or SIGTERM cancels it (its ``async with`` blocks close the Kafka clients) and the
    exit code is ``stopped``, or 128 + the signal number when ``stopped`` is None.

    The handlers are installed whatever disposition the process inherited: asyncio turns Ctrl-C into a
    cancellation only while SIGINT has Python's default handler, and not at all for SIGTERM.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    received: list[int] = []

    def stop(signum: int) -> None:
        received.append(signum)
        task.cancel()

    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop, sig)
    try:
        return await task
    except asyncio.CancelledError:
        if not received:
            raise
        return stopped if stopped is not None else 128 + received[0]
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _setup_tracing()
    try:
        commands = {"publish": _publish, "watch": _watch, "follows": _follows}
        selectors = {"cancel-matching": kill_cli.cancel_matching, "kills": kill_cli.kills, "lift": kill_cli.lift}
        if args.command in selectors:
            work = selectors[args.command](args, _kafka_options(args))
        else:
            work = commands[args.command](args)
        return asyncio.run(_until_signalled(work, stopped=EXIT_OK if args.command == "watch" else None))
    except ConfigError as exc:
        _say(f"batch-cancel: configuration error, nothing published: {exc}", err=True)
        return EXIT_USAGE
    except (ValidationError, InvalidCommand, ValueError) as exc:
        _say(f"batch-cancel: invalid command, nothing published: {exc}", err=True)
        return EXIT_USAGE
    except (KafkaError, LookupError, OSError) as exc:
        _say(f"batch-cancel: Kafka error: {exc!r}", err=True)
        return EXIT_KAFKA
    except KeyboardInterrupt:
        return EXIT_OK if args.command == "watch" else EXIT_INTERRUPTED  # Ctrl-C is how a watch ends


if __name__ == "__main__":
    sys.exit(main())
