"""Turn matches into child cancel commands and publish them to the commands topic.

A child is an ordinary ``CancelCommand`` keyed by its batch key, so it lands on the partition where a
publisher's own command for that batch lands and meets the same follow. Its id is derived from the selector's
id and the batch (``child_command_id``): publishing the same selector's children twice publishes the same
commands twice, which the follow engine absorbs as a redelivery. ``reason``, ``requested_by``,
``requested_at`` and ``follow`` are the selector's; ``metadata["bcw.parent"]`` names the selector.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from worker import faults
from worker.contract import PARENT_METADATA_KEY, CancelCommand, SelectorCommand, child_command_id
from worker.providers.listing import ListedBatch

__all__ = ["PARENT_KEY", "PUBLISH_CHUNK", "CommandSink", "child_of", "publish_children"]

#: The metadata key that names a child's selector.
PARENT_KEY = PARENT_METADATA_KEY
#: Children sent at once; the producer bounds sends in flight itself, this bounds the tasks waiting on it.
PUBLISH_CHUNK = 500
#: Children are published at most this many times faster than the account's request budget can cancel them
#: (after a first burst of ``PACE_BURST_S`` seconds' worth): ten thousand children published at once would
#: sit in front of every plain command of their partitions while the workers take them in, for no gain, since
#: the provider is cancelled at the budget's rate anyway.
PACE_FACTOR = 2.0
PACE_BURST_S = 10.0


class CommandSink(Protocol):
    """Where children go (``worker.kafka.producer.EventProducer``): durable (acks=all) when ``send_command``
    returns; ``context`` carries the selector's trace, so every child continues it."""

    async def send_command(self, key: str, value: bytes, context: Any) -> None: ...


def child_of(selector: SelectorCommand, batch: ListedBatch) -> CancelCommand:
    return CancelCommand(
        command_id=child_command_id(selector.command_id, selector.provider, selector.account, batch.batch_id),
        provider=selector.provider,
        account=selector.account,
        batch_id=batch.batch_id,
        reason=selector.reason,
        requested_by=selector.requested_by,
        requested_at=selector.requested_at,
        follow=selector.follow,
        metadata={PARENT_KEY: selector.command_id},
    )


def encode_child(child: CancelCommand) -> bytes:
    return child.model_dump_json(exclude_none=True).encode()


async def publish_children(
    sink: CommandSink,
    selector: SelectorCommand,
    batches: Iterable[ListedBatch],
    context: Any,
    *,
    budget: float | None = None,
) -> Sequence[str]:
    """Publish one child per batch, paced by the account's request ``budget`` (per second; None: at once);
    returns their command ids once every one is acknowledged."""
    children = [child_of(selector, batch) for batch in batches]
    rate = None if budget is None else max(1.0, budget * PACE_FACTOR)
    burst = 0.0 if rate is None else rate * PACE_BURST_S
    size = PUBLISH_CHUNK if rate is None else max(1, min(PUBLISH_CHUNK, int(rate)))
    started = time.monotonic()
    for start in range(0, len(children), size):
        chunk = children[start : start + size]
        if rate is not None:  # the chunk may go once the allowance (burst + rate x elapsed) covers it
            due = started + max(0.0, start + len(chunk) - burst) / rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        await asyncio.gather(*(_send(sink, c, context) for c in chunk))
    return [c.command_id for c in children]


async def _send(sink: CommandSink, child: CancelCommand, context: Any) -> None:
    await sink.send_command(child.key, encode_child(child), context)
    faults.reached("child_published")
