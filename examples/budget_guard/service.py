"""The guard's loop: read spend records, ask the ledger, publish cancel commands through ``worker.publisher``.

The spend topic is read without a consumer group from the earliest offset, so a restarted guard rebuilds
its totals from history instead of starting every team at zero; command ids are derived from team and
batch, so a replayed decision republishes the *same* command rather than a new one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pydantic import ValidationError

from examples.budget_guard.ledger import BatchRef, Ledger, SpendEvent
from worker.publisher import publish_cancel

__all__ = ["GuardConfig", "command_id_for", "run"]

log = logging.getLogger("budget_guard")
_NAMESPACE = uuid.UUID("5b0c1c1e-2f5d-4f55-9a57-2d4a1f0e6b11")


@dataclass(frozen=True)
class GuardConfig:
    bootstrap_servers: str
    spend_topic: str
    commands_topic: str


def command_id_for(team: str, ref: BatchRef) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"budget-guard\x1f{team}\x1f{ref.key}"))


async def run(config: GuardConfig, ledger: Ledger, stop: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(
        config.spend_topic,
        bootstrap_servers=config.bootstrap_servers,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    producer = AIOKafkaProducer(bootstrap_servers=config.bootstrap_servers, acks="all", enable_idempotence=True)
    await consumer.start()
    await producer.start()
    log.info("budget guard ready: reading %s, publishing to %s", config.spend_topic, config.commands_topic)
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    await _handle(record.value, config, ledger, producer)
    finally:
        await consumer.stop()
        await producer.stop()


async def _handle(value: bytes | None, config: GuardConfig, ledger: Ledger, producer: AIOKafkaProducer) -> None:
    try:
        event = SpendEvent.model_validate(json.loads(value or b""))
    except (ValueError, ValidationError) as exc:
        log.warning("skipping a spend record that is not a spend event: %s", str(exc)[:200])
        return
    for ref in ledger.record(event):
        spent, budget = ledger.spent[event.team], ledger.budget(event.team)
        command_id = await publish_cancel(
            config.bootstrap_servers,
            ref.provider,
            ref.batch_id,
            account=ref.account,
            reason=f"budget guard: team {event.team} spent ${spent:.2f} of ${budget:.2f}",
            topic=config.commands_topic,
            producer=producer,
            command_id=command_id_for(event.team, ref),
            requested_by="examples.budget_guard",
            metadata={"team": event.team, "spent_usd": f"{spent:.2f}", "budget_usd": f"{budget:.2f}"},
        )
        log.info("cancel published for %s (team %s over budget): command %s", ref.key, event.team, command_id)
