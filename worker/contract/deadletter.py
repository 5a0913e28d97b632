"""Dead-letter records: the original headers unchanged, then Kafka Connect's context headers and ours."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from worker.contract.event import _rfc3339, _utc
from worker.contract.types import (
    DeadLetterReason,
    _bounded,
)

#: Stable across refactors: DLQ tooling may route on it.
EXCEPTION_CLASS = "worker.contract.InvalidCommand"
DLQ_REASON_HEADER = "bcw.dlq.reason"
DLQ_MESSAGE_HEADER = "bcw.dlq.message"
DLQ_TIME_HEADER = "bcw.dlq.time"


def dead_letter_headers(
    original_headers: Sequence[tuple[str, bytes]],
    *,
    reason: DeadLetterReason,
    message: str,
    topic: str,
    partition: int,
    offset: int,
    at: datetime | None = None,
) -> list[tuple[str, bytes]]:
    """The record's own headers untouched, then Kafka Connect's DLQ context headers, then ours.

    Connect's names let existing DLQ tooling read our records; a record dead-lettered twice (replayed from
    the DLQ) carries both sets, and the last occurrence of a header name is the newest.
    """
    text = _bounded(message)
    ours = {
        "__connect.errors.topic": topic,
        "__connect.errors.partition": str(partition),
        "__connect.errors.offset": str(offset),
        "__connect.errors.exception.class.name": EXCEPTION_CLASS,
        "__connect.errors.exception.message": f"{reason.value}: {text}",
        DLQ_REASON_HEADER: reason.value,
        DLQ_MESSAGE_HEADER: text,
        DLQ_TIME_HEADER: _rfc3339(_utc(at)),
    }
    return list(original_headers) + [(name, value.encode()) for name, value in ours.items()]
