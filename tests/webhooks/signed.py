"""Deliveries signed the way a provider signs them, by the ``standardwebhooks`` library (code we did not write)."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from standardwebhooks import Webhook

WHSEC = "whsec_" + "c2VjcmV0LWZvci10ZXN0cy1vbmx5LTMyLWJ5dGVzISE="  # base64 of 32 bytes
RAW = "a-raw-openai-secret-without-the-prefix"


def openai_body(batch: str = "batch_abc", kind: str = "batch.cancelled") -> bytes:
    event = {"id": f"evt_{uuid.uuid4().hex}", "object": "event", "type": kind, "created_at": 1719168000}
    return json.dumps(event | {"data": {"id": batch}}).encode()


def gemini_body(batch: str = "batches/abc", kind: str = "batch.succeeded") -> bytes:
    return json.dumps(
        {"type": kind, "version": "v1", "timestamp": "2026-12-03T10:00:00Z", "data": {"id": batch}}
    ).encode()


def bedrock_body(job: str = "abcdefgh1234", status: str = "Stopped", **extra: Any) -> bytes:
    arn = f"arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/{job}"
    event = {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Batch Inference Job State Change",
        "source": "aws.bedrock",
        "account": "123456789012",
        "time": "2026-12-03T10:00:00Z",
        "region": "us-east-1",
        "resources": [arn],
        "detail": {"version": "0.0", "batchJobArn": arn, "batchJobName": "j", "status": status},
    }
    return json.dumps(event | extra).encode()


def sign(secret: str | bytes, body: bytes, *, at: float | None = None, msg_id: str | None = None) -> dict[str, str]:
    """Standard Webhooks headers for ``body``: ``secret`` as text is whsec_/base64, as bytes it is the raw key."""
    msg_id = msg_id or f"wh_{uuid.uuid4().hex}"
    when = datetime.fromtimestamp(time.time() if at is None else at, UTC)
    signature = Webhook(secret).sign(msg_id, when, body.decode())
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(when.timestamp())), "webhook-signature": signature}
