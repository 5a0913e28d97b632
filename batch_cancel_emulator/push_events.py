"""What a pushing provider sends when a batch changes state: the event body, and the signed request headers.

Three shapes (PUSH-SPEC, research ``selectors-and-push.md`` part B):

* OpenAI: an event ``{id: evt_…, object: event, type: batch.<state>, created_at, data: {id}}`` for the four
  terminal states only, signed with Standard Webhooks (``webhook-id: wh_…``). A secret ``whsec_<base64>`` is
  base64 after the prefix; any other secret is used as its raw bytes — what OpenAI's own SDK does when it
  verifies, which differs from the ``standardwebhooks`` library.
* Gemini API (project webhooks): ``{type: batch.<state>, version: v1, timestamp, data: {id: batches/…}}``
  for succeeded / failed / expired — the official event enum has no cancelled event, so a cancelled batch
  sends nothing. Signed like OpenAI's, but the secret is always base64 (with or without ``whsec_``), as the
  ``standardwebhooks`` library reads it. The ``msg_`` webhook-id prefix is the emulator's choice (Google does
  not show one).
* Bedrock: the EventBridge event itself (``Batch Inference Job State Change``) for every status change, posted
  by an API destination whose connection adds one API-key header; no signature. ``creationTime`` is written
  the way AWS's sample event writes it (not ISO 8601), so a receiver that parses it is caught here.

The signing is this project's own code on purpose: the fidelity tests verify it with OpenAI's SDK and the
``standardwebhooks`` library, code we did not write.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from batch_cancel_emulator.cloud_shapes import status_word
from batch_cancel_emulator.model import TERMINAL, Batch

__all__ = ["DIALECTS", "Event", "build_event", "headers", "signing_key"]

#: The dialects whose providers push (nobody else has a batch push mechanism).
DIALECTS = ("openai", "gemini", "bedrock")
OPENAI_USER_AGENT = "OpenAI/1.0 (+https://platform.openai.com/docs/webhooks)"
EVENTBRIDGE_USER_AGENT = "Amazon/EventBridge/ApiDestinations"
_GEMINI_TYPES = {"completed": "batch.succeeded", "failed": "batch.failed", "expired": "batch.expired"}
_AWS_ACCOUNT = "123456789012"
_AWS_REGION = "us-east-1"
_BEDROCK_MODEL = f"arn:aws:bedrock:{_AWS_REGION}::foundation-model/anthropic.claude-3-haiku-20240307-v1:0"


@dataclass(frozen=True, slots=True)
class Event:
    """One event of one batch: the same ``delivery_id`` and body on every attempt (only the signature and
    its timestamp are renewed), so a receiver can deduplicate retries by it."""

    dialect: str
    batch_id: str
    kind: str  # the event type (batch.cancelled) or, for Bedrock, the new detail.status (Stopped)
    delivery_id: str  # webhook-id (OpenAI wh_…, Gemini msg_…) or the EventBridge event id (a UUID)
    body: bytes


def build_event(batch: Batch, before: str, after: str, at: float) -> Event | None:
    """The event ``batch`` sends for its shown status changing from ``before`` to ``after`` at wall time ``at``,
    or None when its provider says nothing about that change."""
    if batch.dialect == "openai" and after in TERMINAL:
        kind = f"batch.{after}"
        body: dict[str, object] = {
            "id": f"evt_{uuid.uuid4().hex}",
            "object": "event",
            "type": kind,
            "created_at": int(at),
            "data": {"id": batch.id},
        }
        return Event(batch.dialect, batch.id, kind, f"wh_{uuid.uuid4().hex}", _json(body))
    if batch.dialect == "gemini" and after in _GEMINI_TYPES:
        kind = _GEMINI_TYPES[after]
        body = {"type": kind, "version": "v1", "timestamp": _iso(at), "data": {"id": f"batches/{batch.id}"}}
        return Event(batch.dialect, batch.id, kind, f"msg_{uuid.uuid4().hex}", _json(body))
    if batch.dialect == "bedrock":
        old, new = status_word("bedrock", before), status_word("bedrock", after)
        if old == new:  # e.g. in_progress -> finalizing: both InProgress, no change AWS could see
            return None
        event_id = str(uuid.uuid4())
        return Event(batch.dialect, batch.id, new, event_id, _json(_eventbridge(batch, new, event_id, at)))
    return None


def _eventbridge(batch: Batch, status: str, event_id: str, at: float) -> dict[str, object]:
    arn = f"arn:aws:bedrock:{_AWS_REGION}:{_AWS_ACCOUNT}:model-invocation-job/{batch.id}"
    return {
        "version": "0",
        "id": event_id,
        "detail-type": "Batch Inference Job State Change",
        "source": "aws.bedrock",
        "account": _AWS_ACCOUNT,
        "time": _iso(at, millis=False),
        "region": _AWS_REGION,
        "resources": [arn],
        "detail": {
            "version": "0.0",
            "accountId": _AWS_ACCOUNT,
            "batchJobName": f"emulator-{batch.id}",  # the jobName a GetModelInvocationJob shows
            "batchJobArn": arn,
            "batchModelId": _BEDROCK_MODEL,
            "status": status,
            "failureMessage": "every record of the job failed" if status == "Failed" else "",
            "creationTime": _aws_sample_time(batch.created_at),
        },
    }


def signing_key(dialect: str, secret: str) -> bytes:
    """The HMAC key a Standard Webhooks secret stands for, read as ``dialect``'s provider reads it; ValueError
    for a secret that cannot be one (empty, or not base64 where base64 is required)."""
    if not secret:
        raise ValueError("a webhook secret may not be empty")
    if dialect == "openai" and not secret.startswith("whsec_"):
        return secret.encode()  # OpenAI's SDK: a secret without the prefix is its own raw bytes
    encoded = secret.removeprefix("whsec_")
    if dialect != "openai":
        encoded += "=="  # the standardwebhooks library pads, so an unpadded secret works there; OpenAI's SDK does not
    try:
        key = base64.b64decode(encoded)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("the webhook secret is not base64 after whsec_") from exc
    if not key:
        raise ValueError("the webhook secret is no base64 of at least one byte")
    return key


def headers(event: Event, *, key: bytes | None, header: str | None, secret: str, timestamp: int) -> dict[str, str]:
    """The request headers of one delivery attempt: Standard Webhooks signed over ``id.timestamp.body`` with
    ``key`` (OpenAI, Gemini), or the EventBridge connection's API-key ``header: secret`` (Bedrock)."""
    out = {"content-type": "application/json"}
    if event.dialect == "bedrock":
        assert header is not None
        return out | {"user-agent": EVENTBRIDGE_USER_AGENT, header: secret}
    assert key is not None
    signed = f"{event.delivery_id}.{timestamp}.".encode() + event.body
    signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    out["webhook-id"] = event.delivery_id
    out["webhook-timestamp"] = str(timestamp)
    out["webhook-signature"] = f"v1,{signature}"
    if event.dialect == "openai":
        out["user-agent"] = OPENAI_USER_AGENT
    return out


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _iso(at: float, *, millis: bool = True) -> str:
    return (
        datetime.fromtimestamp(at, UTC)
        .isoformat(timespec="milliseconds" if millis else "seconds")
        .replace("+00:00", "Z")
    )


def _aws_sample_time(unix: int) -> str:
    """``Aug 28, 2024, 10:47:53 PM``: how AWS's sample Bedrock event writes ``creationTime``."""
    t = datetime.fromtimestamp(unix, UTC)
    return f"{t:%b} {t.day}, {t:%Y}, {t.hour % 12 or 12}:{t:%M:%S} {t:%p}"
