"""``batch-cancel cancel-matching``, ``kills`` and ``lift``: the kill switch from a shell.

``cancel-matching`` always previews first (a dry-run selector: the worker lists and matches, cancels nothing),
shows the matches and their count, asks before it cancels (``--yes`` skips the question; without a terminal it
refuses unless ``--yes``, so a script never hangs on a prompt nobody sees), then publishes the real selector and,
with ``--wait``, shows the children ending on a progress bar and a summary. Its exit code is the worst outcome:
0 every match cancelled or already finished, 3 some rejected, 4 some gave up, 5 invalid, 6 timed out.
"""

from __future__ import annotations

import argparse
import getpass
import socket
import sys
from collections import Counter
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.prompt import Confirm
from rich.table import Table

from worker.config import KafkaConnection
from worker.contract import KillState, SelectorCommand, SelectorEvent, SelectorOutcome
from worker.contract.topics import COMMANDS_TOPIC, FOLLOWS_TOPIC
from worker.publisher.follows import kept_records
from worker.publisher.selectors import SelectorTimeout, SelectorWatch, build_lift, build_selector, publish_selector

__all__ = ["add_parsers", "cancel_matching", "kills", "lift"]

EXIT_OK, EXIT_NO, EXIT_USAGE, EXIT_TIMEOUT = 0, 1, 2, 6
#: Worst first: the exit code of a run is the code of the worst outcome any child (or the selector) had.
_CODES = {"invalid": 5, "gave_up": 4, "rejected": 3}
_FINISHED = ("completed", "failed", "expired")

#: Without a terminal (a script, CI, a pipe) rich would cut tables to 80 columns and elide batch ids: be wide.
_WIDTH = None if sys.stdout.isatty() else 240
err = Console(stderr=True, width=None if sys.stderr.isatty() else 240)
out = Console(width=_WIDTH)


def add_parsers(sub: Any, kafka: argparse.ArgumentParser, env: Any) -> None:
    """The three subcommands, on ``batch-cancel``'s parser (``kafka`` holds the shared connection options)."""
    who = f"{getpass.getuser()}@{socket.gethostname()}"
    cm = sub.add_parser(
        "cancel-matching",
        parents=[kafka],
        help="cancel every running batch of one account that matches (preview, confirm, progress)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cm.add_argument("--provider", required=True)
    cm.add_argument("--account", required=True, help="a selector never spans accounts")
    cm.add_argument("--metadata", action="append", default=[], metavar="K=V", help="must be on the batch (repeat)")
    cm.add_argument("--status", action="append", dest="statuses", metavar="STATUS", help="default: all running")
    cm.add_argument("--model")
    cm.add_argument("--endpoint")
    cm.add_argument("--name-prefix")
    cm.add_argument("--created-after", type=datetime.fromisoformat, metavar="TIME")
    cm.add_argument("--created-before", type=datetime.fromisoformat, metavar="TIME")
    cm.add_argument("--until", type=datetime.fromisoformat, metavar="TIME", help="a standing kill until then")
    cm.add_argument("--interval", type=float, metavar="S", help="a standing kill's sweep interval (10-3600 s)")
    cm.add_argument("--max", type=int, dest="max_batches", help="refuse (cancel nothing) beyond this many (100)")
    cm.add_argument("--reason", required=True)
    cm.add_argument("--requested-by", default=who)
    cm.add_argument("--dry-run", action="store_true", help="preview only")
    cm.add_argument("--yes", action="store_true", help="do not ask (needed without a terminal)")
    cm.add_argument("--wait", action="store_true", help="follow the children to their end and summarise")
    cm.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for the preview and --wait")
    cm.add_argument("--commands-topic", default=env("BCW_COMMANDS_TOPIC", COMMANDS_TOPIC))
    ks = sub.add_parser("kills", parents=[kafka], help="list the standing kills (from the follow-state topic)")
    ks.add_argument("--follows-topic", default=env("BCW_FOLLOWS_TOPIC", FOLLOWS_TOPIC))
    ks.add_argument("--json", action="store_true")
    lf = sub.add_parser("lift", parents=[kafka], help="end a standing kill before its until")
    lf.add_argument("kill_id", metavar="KILL_ID", help="the command_id of the selector that started the kill")
    lf.add_argument("--provider", required=True)
    lf.add_argument("--account", required=True)
    lf.add_argument("--reason", required=True)
    lf.add_argument("--requested-by", default=who)
    lf.add_argument("--timeout", type=float, default=120.0)
    lf.add_argument("--commands-topic", default=env("BCW_COMMANDS_TOPIC", COMMANDS_TOPIC))


def _selector(args: argparse.Namespace, *, dry_run: bool, command_id: str | None = None) -> SelectorCommand:
    pairs = dict(_pair(p) for p in args.metadata)
    match = {
        "statuses": args.statuses,
        "metadata": pairs or None,
        "model": args.model,
        "endpoint": args.endpoint,
        "name_prefix": args.name_prefix,
        "created_after": args.created_after,
        "created_before": args.created_before,
    }
    return build_selector(
        args.provider,
        args.account,
        reason=args.reason,
        requested_by=args.requested_by,
        match={k: v for k, v in match.items() if v is not None},
        command_id=command_id,
        dry_run=dry_run,
        max_batches=args.max_batches,
        until=None if dry_run else args.until,
        sweep_interval_s=None if dry_run else args.interval,
    )


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--metadata wants KEY=VALUE, not {text!r}")
    return key, value


async def cancel_matching(args: argparse.Namespace, options: dict[str, Any]) -> int:
    real = _selector(args, dry_run=False)  # validated before any connection: a bad criterion fails now (exit 2)
    preview = _selector(args, dry_run=True, command_id=f"{real.command_id}-preview")
    verdict = await _run(args, options, preview)
    if verdict.outcome is not SelectorOutcome.PREVIEWED:
        return _failed(verdict)
    _show_preview(verdict)
    if args.dry_run:
        return EXIT_OK
    if verdict.matched == 0 and real.until is None:
        err.print("nothing matches: nothing to cancel")
        return EXIT_OK
    if not _confirmed(args, real, verdict.matched):
        return EXIT_NO
    return await _cancel(args, options, real)


async def _cancel(args: argparse.Namespace, options: dict[str, Any], real: SelectorCommand) -> int:
    """Publish the confirmed selector; with ``--wait``, follow its children to the summary."""
    async with SelectorWatch(args.bootstrap_servers, real, topic=args.events_topic, kafka_options=options) as watch:
        await publish_selector(args.bootstrap_servers, real, topic=args.commands_topic, kafka_options=options)
        out.print(real.command_id)
        if not args.wait:
            return EXIT_OK
        try:
            ended = await (watch.first_sweep if real.standing else watch.final)(timeout=args.timeout)
        except SelectorTimeout as exc:
            err.print(f"batch-cancel: timeout: {exc}")
            return EXIT_TIMEOUT
        if ended.outcome not in (None, SelectorOutcome.EXPANDED):
            return _failed(ended)
        tally = await _children(watch, ended.published, args.timeout)
    return _summary(tally.outcomes, ended.published, standing=real.standing)


async def _run(args: argparse.Namespace, options: dict[str, Any], command: SelectorCommand) -> SelectorEvent:
    async with SelectorWatch(args.bootstrap_servers, command, topic=args.events_topic, kafka_options=options) as w:
        await publish_selector(args.bootstrap_servers, command, topic=args.commands_topic, kafka_options=options)
        with err.status(f"listing {command.provider}/{command.account}…") as status:

            def progress(event: SelectorEvent) -> None:
                status.update(
                    f"listing {command.provider}/{command.account}: {event.pages} pages, {event.matched} match"
                )

            return await w.final(timeout=args.timeout, on_event=progress)


def _show_preview(event: SelectorEvent) -> None:
    table = Table(title=f"{event.matched} batches match ({event.listed} listed, {event.pages} pages)")
    for column in ("batch id", "status", "created", "model", "name", "metadata"):
        table.add_column(column)
    for m in event.matches:
        created = datetime.fromtimestamp(m.created_at).isoformat(timespec="seconds") if m.created_at else ""
        meta = ", ".join(f"{k}={v}" for k, v in m.metadata.items())
        table.add_row(m.batch_id, m.status.value, created, m.model or "", m.name or "", meta)
    out.print(table)
    if event.matched > len(event.matches):
        out.print(f"… and {event.matched - len(event.matches)} more")


def _confirmed(args: argparse.Namespace, command: SelectorCommand, count: int) -> bool:
    if args.yes:
        return True
    if not sys.stdin.isatty():
        err.print("batch-cancel: refusing to cancel without a terminal to confirm on; pass --yes")
        return False
    stand = f" and keep cancelling new matches until {command.until.isoformat()}" if command.until else ""
    return Confirm.ask(f"Cancel {count} batches of {command.provider}/{command.account}{stand}?", default=False)


async def _children(watch: SelectorWatch, expected: int, timeout: float) -> Any:
    columns = (TextColumn("children"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=False) as bar:
        task = bar.add_task("children", total=expected)
        tally = await watch.children(
            expected, timeout=timeout, on_progress=lambda t: bar.update(task, completed=t.done)
        )
    return tally


def _summary(outcomes: Counter[str], expected: int, *, standing: bool) -> int:
    finished = sum(outcomes[o] for o in _FINISHED)
    table = Table(title="summary" + (" (first sweep; the kill stands)" if standing else ""))
    for column in ("cancelled", "already finished", "rejected", "gave up", "not yet ended"):
        table.add_column(column, justify="right")
    done = sum(outcomes.values())
    table.add_row(
        str(outcomes["cancelled"]),
        str(finished),
        str(outcomes["rejected"]),
        str(outcomes["gave_up"]),
        str(max(0, expected - done)),
    )
    out.print(table)
    for outcome, code in _CODES.items():
        if outcomes[outcome]:
            return code
    return EXIT_TIMEOUT if done < expected else EXIT_OK


def _failed(event: SelectorEvent) -> int:
    detail = event.detail
    words = f"{detail.code}: {detail.message}" if detail is not None else ""
    err.print(f"batch-cancel: {event.outcome.value if event.outcome else 'no outcome'}: {words}")
    return _CODES.get(event.outcome.value if event.outcome else "", EXIT_NO)


async def kills(args: argparse.Namespace, options: dict[str, Any]) -> int:
    settings = KafkaConnection(kafka_bootstrap_servers=args.bootstrap_servers)
    records = await kept_records(settings, args.follows_topic)
    states = sorted((s for s in records if isinstance(s, KillState)), key=lambda s: s.started_at)
    if args.json:
        for state in states:
            out.print_json(state.model_dump_json())
        return EXIT_OK
    table = Table(title=f"{len(states)} standing kills")
    for column in ("kill id", "provider/account", "until", "sweeps", "cancels published", "reason", "by"):
        table.add_column(column)
    for s in states:
        c = s.selector
        until = c.until.isoformat() if c.until else ""
        where = f"{c.provider}/{c.account}"
        table.add_row(c.command_id, where, until, str(s.sweeps), str(s.published), c.reason, c.requested_by)
    out.print(table)
    return EXIT_OK


async def lift(args: argparse.Namespace, options: dict[str, Any]) -> int:
    command = build_lift(args.provider, args.account, args.kill_id, reason=args.reason, requested_by=args.requested_by)
    async with SelectorWatch(args.bootstrap_servers, command, topic=args.events_topic, kafka_options=options) as watch:
        await publish_selector(args.bootstrap_servers, command, topic=args.commands_topic, kafka_options=options)
        try:
            final = await watch.final(timeout=args.timeout)
        except SelectorTimeout as exc:
            err.print(f"batch-cancel: timeout: {exc}")
            return EXIT_TIMEOUT
    if final.outcome is SelectorOutcome.LIFTED:
        out.print(f"lifted {args.kill_id}")
        return EXIT_OK
    return _failed(final)
