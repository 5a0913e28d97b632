"""The Python client for cancel by selector: build, publish, and watch a selector, its children, and lifts.

Typed like the worker's own contract: ``build_selector`` returns the ``SelectorCommand`` the worker will
decode (a criterion the schema refuses fails here, before anything is sent), ``SelectorWatch`` yields the
selector's ``SelectorEvent``s and tallies its children's finals. A child is recognised without any registry:
its ``command_id`` is ``child_command_id(selector id, provider, account, batch_id)``, computed from the batch id
its own event carries.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from pydantic import ValidationError

from worker.contract import (
    CE_TYPE_SELECTOR_FINAL,
    CE_TYPE_SELECTOR_PROGRESS,
    Criteria,
    LiftCommand,
    SelectorCommand,
    SelectorEvent,
    child_command_id,
    decode_any,
)
from worker.publisher.client import DEFAULT_COMMANDS_TOPIC, DEFAULT_EVENTS_TOPIC, EventFollower, trace_headers
from worker.signing import sign

__all__ = [
    "ChildTally",
    "SelectorTimeout",
    "SelectorWatch",
    "build_lift",
    "build_selector",
    "publish_selector",
]

_SELECTOR_TYPES = {CE_TYPE_SELECTOR_PROGRESS.encode(), CE_TYPE_SELECTOR_FINAL.encode()}


class SelectorTimeout(TimeoutError):
    """The selector (or its children) did not end within the time given."""


def build_selector(
    provider: str,
    account: str,
    *,
    reason: str,
    requested_by: str,
    match: Criteria | Mapping[str, Any] | None = None,
    command_id: str | None = None,
    dry_run: bool = False,
    max_batches: int | None = None,
    until: datetime | None = None,
    sweep_interval_s: float | None = None,
    follow: bool = True,
    requested_at: datetime | None = None,
) -> SelectorCommand:
    """A selector command as the worker will read it (raises ``pydantic.ValidationError`` if it would not)."""
    body: dict[str, Any] = {
        "kind": "cancel_matching",
        "command_id": command_id or f"sel-{uuid.uuid4()}",
        "provider": provider,
        "account": account,
        "match": match.model_dump(exclude_none=True) if isinstance(match, Criteria) else dict(match or {}),
        "reason": reason,
        "requested_by": requested_by,
        "dry_run": dry_run,
        "follow": follow,
    }
    optional = {
        "max_batches": max_batches,
        "until": until,
        "sweep_interval_s": sweep_interval_s,
        "requested_at": requested_at,
    }
    body |= {k: v for k, v in optional.items() if v is not None}
    return SelectorCommand.model_validate(body)


def build_lift(
    provider: str, account: str, kill_id: str, *, reason: str, requested_by: str, requested_at: datetime | None = None
) -> LiftCommand:
    return LiftCommand.model_validate(
        {
            "kind": "lift_kill",
            "command_id": f"lift-{uuid.uuid4()}",
            "provider": provider,
            "account": account,
            "kill_id": kill_id,
            "reason": reason,
            "requested_by": requested_by,
            **({"requested_at": requested_at} if requested_at is not None else {}),
        }
    )


async def publish_selector(
    bootstrap_servers: str,
    command: SelectorCommand | LiftCommand,
    *,
    topic: str = DEFAULT_COMMANDS_TOPIC,
    kafka_options: Mapping[str, Any] | None = None,
    signing_key: bytes | None = None,
) -> None:
    """Send a selector or lift keyed ``provider/account/*`` (so a lift reaches its kill's owner), checked with
    the worker's own decoder first, acknowledged by every in-sync replica when this returns."""
    value = command.model_dump_json(exclude_none=True).encode()
    decode_any(value, max_bytes=64 * 1024)  # the worker's own verdict, before anything leaves
    headers = trace_headers()
    if signing_key is not None:
        headers.append(sign(value, signing_key))
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers, acks="all", enable_idempotence=True, **dict(kafka_options or {})
    )
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=command.key.encode(), headers=headers)
    finally:
        await producer.stop()


@dataclass
class ChildTally:
    """The children's finals seen so far, by outcome."""

    outcomes: Counter[str] = field(default_factory=Counter)
    seen: set[str] = field(default_factory=set)

    @property
    def done(self) -> int:
        return len(self.seen)


class SelectorWatch:
    """Reads the events topic from before the selector is sent: its own events and its children's finals.

    Enter it before ``publish_selector`` (it fixes its start offsets on entry), then ``final`` and ``children``.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        command: SelectorCommand | LiftCommand,
        *,
        topic: str = DEFAULT_EVENTS_TOPIC,
        kafka_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.command = command
        self._follower = EventFollower(bootstrap_servers, topic, kafka_options=kafka_options)
        self.events: list[SelectorEvent] = []
        self.tally = ChildTally()
        self.invalid: dict[str, Any] | None = None

    async def __aenter__(self) -> SelectorWatch:
        await self._follower.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._follower.__aexit__(None, None, None)

    async def final(
        self, *, timeout: float, on_event: Callable[[SelectorEvent], object] | None = None
    ) -> SelectorEvent:
        """The selector's final event (or, for a standing kill with ``sweep`` set, that sweep's progress)."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            for event in await self._read(remaining):
                if on_event is not None:
                    on_event(event)
                if event.final:
                    return event
        raise SelectorTimeout(f"no final event for {self.command.command_id} within {timeout:g}s")

    async def first_sweep(self, *, timeout: float) -> SelectorEvent:
        """A standing kill's first sweep report (its final comes only when it ends), or an early final."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            for event in await self._read(remaining):
                if event.final or event.swept:
                    return event
        raise SelectorTimeout(f"no sweep of {self.command.command_id} within {timeout:g}s")

    async def children(
        self, expected: int, *, timeout: float, on_progress: Callable[[ChildTally], object] | None = None
    ) -> ChildTally:
        """Wait until ``expected`` children have a final (or the timeout); returns the tally either way."""
        deadline = time.monotonic() + timeout
        while self.tally.done < expected and (remaining := deadline - time.monotonic()) > 0:
            await self._read(remaining)
            if on_progress is not None:
                on_progress(self.tally)
        return self.tally

    async def _read(self, remaining: float) -> Sequence[SelectorEvent]:
        """One fetch: selector events of this command are returned; children's finals are tallied."""
        found: list[SelectorEvent] = []
        command = self.command
        for headers, value in await self._follower.records(int(min(remaining, 0.5) * 1000)):
            kind = headers.get("ce_type")
            if kind in _SELECTOR_TYPES:
                if headers.get("ce_commandid") != command.command_id.encode():
                    continue
                try:
                    event = SelectorEvent.model_validate_json(value or b"")
                except ValidationError:
                    continue
                if event.event_id not in {e.event_id for e in self.events}:
                    self.events.append(event)
                    found.append(event)
                continue
            if headers.get("ce_outcome") is None:
                continue  # not a final
            body = _json(value)
            if body is None:
                continue
            cid, batch = body.get("command_id"), body.get("batch_id")
            if cid == command.command_id and body.get("outcome") == "invalid":
                self.invalid = body  # the selector itself was dead-lettered: a batch-state invalid event
                found.append(_invalid_as_selector(command, body))
                continue
            if not isinstance(cid, str) or not cid.startswith("sel-") or not isinstance(batch, str):
                continue
            mine = cid == child_command_id(command.command_id, command.provider, command.account, batch)
            if mine and cid not in self.tally.seen:
                self.tally.seen.add(cid)
                self.tally.outcomes[str(body.get("outcome"))] += 1
        return found


def _json(value: bytes | None) -> dict[str, Any] | None:
    try:
        body = json.loads(value) if value else None
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _invalid_as_selector(command: SelectorCommand | LiftCommand, body: dict[str, Any]) -> SelectorEvent:
    return SelectorEvent.build(
        command.command_id, command.provider, command.account, final=True, outcome="invalid", detail=body.get("detail")
    )
