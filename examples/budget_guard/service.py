"""The guard's loop: read spend records, ask the ledger, publish standing kills through ``worker.publisher``.

When a team crosses its budget, the guard publishes one selector command per account the team spends on:
cancel every running batch whose metadata says ``team=<team>``, and keep cancelling new ones until the budget
period ends (``until``). The guard never needs the batches' ids, so a batch it never saw is stopped too.

The spend topic is read without a consumer group from the earliest offset, so a restarted guard rebuilds
its totals from history instead of starting every team at zero; a kill's command id is derived from team,
account and period, so a replayed decision republishes the *same* selector, which the worker runs again
harmlessly (same children, same ids) instead of stacking a second kill.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer
from pydantic import ValidationError

from examples.budget_guard.ledger import AccountRef, Ledger, SpendEvent
from worker.publisher.selectors import build_selector, publish_selector

__all__ = ["GuardConfig", "end_of_month", "kill_id_for", "run"]

log = logging.getLogger("budget_guard")
_NAMESPACE = uuid.UUID("5b0c1c1e-2f5d-4f55-9a57-2d4a1f0e6b11")


@dataclass(frozen=True)
class GuardConfig:
    bootstrap_servers: str
    spend_topic: str
    commands_topic: str
    #: The metadata key a team's batches carry (``{"team": "research"}``).
    team_key: str = "team"
    #: When the budget period ends; its kills stand until then. Default: the end of the current month (UTC).
    period_end: datetime | None = None
    sweep_interval_s: float = 60.0


def end_of_month(now: datetime) -> datetime:
    """The first instant of next month, UTC: when a monthly budget resets and its kills are lifted."""
    first = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return first.replace(year=first.year + 1, month=1) if first.month == 12 else first.replace(month=first.month + 1)


def kill_id_for(team: str, ref: AccountRef, until: datetime) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"budget-guard\x1f{team}\x1f{ref.provider}/{ref.account}\x1f{until.isoformat()}"))


async def run(config: GuardConfig, ledger: Ledger, stop: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(
        config.spend_topic,
        bootstrap_servers=config.bootstrap_servers,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    log.info("budget guard ready: reading %s, publishing to %s", config.spend_topic, config.commands_topic)
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    await _handle(record.value, config, ledger)
    finally:
        await consumer.stop()


async def _handle(value: bytes | None, config: GuardConfig, ledger: Ledger) -> None:
    try:
        event = SpendEvent.model_validate(json.loads(value or b""))
    except (ValueError, ValidationError) as exc:
        log.warning("skipping a spend record that is not a spend event: %s", str(exc)[:200])
        return
    until = config.period_end or end_of_month(datetime.now(UTC))
    for ref in ledger.record(event):
        spent, budget = ledger.spent[event.team], ledger.budget(event.team)
        kill = build_selector(
            ref.provider,
            ref.account,
            command_id=kill_id_for(event.team, ref, until),
            match={"metadata": {config.team_key: event.team}},
            until=until,
            sweep_interval_s=config.sweep_interval_s,
            reason=f"budget guard: team {event.team} spent ${spent:.2f} of ${budget:.2f}",
            requested_by="examples.budget_guard",
            max_batches=1000,
        )
        await publish_selector(config.bootstrap_servers, kill, topic=config.commands_topic)
        log.info(
            "standing kill published on %s/%s for team %s until %s: command %s",
            ref.provider,
            ref.account,
            event.team,
            until.isoformat(),
            kill.command_id,
        )
