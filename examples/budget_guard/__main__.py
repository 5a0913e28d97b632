"""``python -m examples.budget_guard --budget-usd 100 --team-budget research=50``; SIGTERM or Ctrl-C stops."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from datetime import datetime
from decimal import Decimal, InvalidOperation

from examples.budget_guard.ledger import Ledger
from examples.budget_guard.service import GuardConfig, run
from worker.publisher import DEFAULT_COMMANDS_TOPIC as COMMANDS_TOPIC


def _team_budget(text: str) -> tuple[str, Decimal]:
    team, sep, amount = text.partition("=")
    try:
        if not sep or not team:
            raise InvalidOperation
        return team, Decimal(amount)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"expected TEAM=USD, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.budget_guard", description=__doc__)
    parser.add_argument("--bootstrap-servers", default=os.environ.get("BCW_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    parser.add_argument("--commands-topic", default=os.environ.get("BCW_COMMANDS_TOPIC", COMMANDS_TOPIC))
    parser.add_argument("--spend-topic", default="spend")
    parser.add_argument("--budget-usd", type=Decimal, help="budget of every team without its own --team-budget")
    parser.add_argument("--team-budget", type=_team_budget, action="append", default=[], metavar="TEAM=USD")
    parser.add_argument("--team-key", default="team", help="the metadata key that names a batch's team")
    parser.add_argument(
        "--period-end", type=datetime.fromisoformat, help="when the budget resets (default: next month, UTC)"
    )
    parser.add_argument("--sweep-interval", type=float, default=60.0, help="a kill's re-listing interval, s")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    ledger = Ledger(budgets=dict(args.team_budget), default_budget=args.budget_usd)
    config = GuardConfig(
        args.bootstrap_servers,
        args.spend_topic,
        args.commands_topic,
        team_key=args.team_key,
        period_end=args.period_end,
        sweep_interval_s=args.sweep_interval,
    )
    asyncio.run(_serve(config, ledger))
    return 0


async def _serve(config: GuardConfig, ledger: Ledger) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run(config, ledger, stop)


if __name__ == "__main__":
    sys.exit(main())
