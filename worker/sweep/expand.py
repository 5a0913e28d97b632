"""Turn matches into child cancel commands and publish them to the commands topic.

A child is an ordinary ``CancelCommand`` keyed by its batch key, so it lands on the partition where a
publisher's own command for that batch lands and meets the same follow. Its id is derived from the selector's
id and the batch (``child_command_id``): publishing the same selector's children twice publishes the same
commands twice, which the follow engine absorbs as a redelivery. ``reason``, ``requested_by``,
``requested_at`` and ``follow`` are the selector's; ``metadata["bcw.parent"]`` names the selector.
"""

from __future__ import annotations

import asyncio
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
    sink: CommandSink, selector: SelectorCommand, batches: Iterable[ListedBatch], context: Any
) -> Sequence[str]:
    """Publish one child per batch; returns their command ids once every one is acknowledged."""
    children = [child_of(selector, batch) for batch in batches]
    for start in range(0, len(children), PUBLISH_CHUNK):
        chunk = children[start : start + PUBLISH_CHUNK]
        await asyncio.gather(*(_send(sink, c, context) for c in chunk))
    return [c.command_id for c in children]


async def _send(sink: CommandSink, child: CancelCommand, context: Any) -> None:
    await sink.send_command(child.key, encode_child(child), context)
    faults.reached("child_published")
