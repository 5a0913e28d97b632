"""What a verified delivery says: which batch changed and how, in each provider's own shape.

Only batch events become signals; any other verified event (OpenAI's ``fine_tuning.job.succeeded``, Gemini's
``video.generated``, a Bedrock model-customization event) is acknowledged and ignored, so the provider does not
retry it for days. A delivery whose shape is not the provider's is ``Malformed`` (400): it was signed with our
secret, so it is a bug or a changed API worth a look, not noise.

* OpenAI: ``{"id": "evt_…", "type": "batch.cancelled", "created_at": <unix>, "data": {"id": "batch_…"}}``;
  terminal events only (completed, cancelled, expired, failed).
* Gemini API: ``{"type": "batch.succeeded", "timestamp": "…", "data": {"id": "batches/…"}}``; succeeded, failed,
  expired (no cancelled event in the official enum; one arriving is taken all the same).
* Bedrock: the EventBridge event, ``detail-type: Batch Inference Job State Change``, ``detail.batchJobArn`` ending
  in the job id and ``detail.status`` in Bedrock's words (every change). The event ``id`` is the delivery id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = ["Change", "Malformed", "parse"]

OPENAI_EVENTS = frozenset({"batch.completed", "batch.cancelled", "batch.expired", "batch.failed"})
GEMINI_EVENTS = frozenset({"batch.succeeded", "batch.failed", "batch.expired", "batch.cancelled"})
BEDROCK_SOURCE = "aws.bedrock"
BEDROCK_DETAIL_TYPE = "Batch Inference Job State Change"


class Malformed(Exception):
    """Verified, but not the provider's shape (the message says what is missing; never the body)."""


@dataclass(frozen=True, slots=True)
class Change:
    batch_id: str
    event: str
    occurred_at: datetime | None
    delivery_id: str | None  # the payload's, when the headers carry none (EventBridge)


def parse(dialect: str, body: bytes) -> Change | None:
    """The batch change ``body`` reports, or None for a verified event that is not about a batch's state."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Malformed("the body is not JSON") from None
    if not isinstance(payload, dict):
        raise Malformed("the body is not a JSON object")
    if dialect == "bedrock":
        return _bedrock(payload)
    kind = payload.get("type")
    if not isinstance(kind, str):
        raise Malformed("no type")
    if kind not in (OPENAI_EVENTS if dialect == "openai" else GEMINI_EVENTS):
        return None
    data = payload.get("data")
    batch = data.get("id") if isinstance(data, dict) else None
    if not isinstance(batch, str) or not batch:
        raise Malformed(f"{kind} without data.id")
    if dialect == "openai":
        created = payload.get("created_at")
        when = datetime.fromtimestamp(created, UTC) if isinstance(created, int) and created > 0 else None
        return Change(batch, kind, when, None)
    return Change(batch.removeprefix("batches/"), kind, _iso(payload.get("timestamp")), None)


def _bedrock(event: dict[str, Any]) -> Change | None:
    if event.get("source") != BEDROCK_SOURCE or event.get("detail-type") != BEDROCK_DETAIL_TYPE:
        return None
    detail, event_id = event.get("detail"), event.get("id")
    if not isinstance(detail, dict) or not isinstance(event_id, str) or not event_id:
        raise Malformed("an EventBridge event without id or detail")
    arn, status = detail.get("batchJobArn"), detail.get("status")
    if not isinstance(arn, str) or "/" not in arn or not isinstance(status, str) or not status:
        raise Malformed("detail without batchJobArn or status")
    return Change(arn.rsplit("/", 1)[-1], status, _iso(event.get("time")), event_id)


def _iso(value: object) -> datetime | None:
    """An ISO 8601 time, or None: Bedrock's own sample shows ``Wed Aug 28 22:58:30 UTC 2024``, so a time that
    does not parse is left out rather than refusing the event."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
