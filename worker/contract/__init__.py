"""The public contract: cancel command in, batch-state events out, dead letters aside.

These pydantic models are the single source of truth; ``schemas/*.schema.json`` are generated from them
(``python -m worker.contract.schemagen``) so that publishers in any language can validate without reading Python.

Design choices that a publisher will notice:

* **Unknown fields in a command are rejected**, not ignored. A cancel command is a powerful message: if a
  future version adds, say, ``dry_run: true`` and an older worker silently ignored it, that worker would
  cancel for real. A new optional field therefore ships together with a new ``schema_version``.
* **Events are the other way round**: consumers should ignore fields they do not know, because the worker
  may add optional ones within ``schema_version`` 1; the event schema therefore allows extra properties.
* ``batch_id`` goes into a URL path, so it is held to a conservative pattern (no ``/``, ``%``, ``?``, ``#``,
  ``..``, whitespace or control characters) before anything else looks at it.
* Provider timestamps are normalised to Unix seconds or ``null``: DashScope's ``0`` and an absent field both
  mean "has not happened".
* Wire input is validated in pydantic's *strict* JSON mode, so ``"follow": "yes"`` or ``"follow_timeout_s":
  "30"`` fail here exactly as they fail against the JSON Schema a Go or Node publisher validates with.
"""

from worker.contract.command import (
    CancelCommand,
    Command,
    CommandCloudEvent,
    InvalidCommand,
    decode_any,
    decode_command,
)
from worker.contract.deadletter import DLQ_MESSAGE_HEADER, DLQ_REASON_HEADER, DLQ_TIME_HEADER, dead_letter_headers
from worker.contract.event import (
    CE_TYPE_FINAL,
    CE_TYPE_STATE,
    BatchStateEvent,
    FailureDetail,
    encode_event,
    event_headers,
    event_key,
    failure_event,
    observed_event,
    state_event,
)
from worker.contract.follow_state import (
    MAX_WAITING,
    FollowState,
    WaitingCommand,
    decode_follow_state,
    encode_follow_state,
)
from worker.contract.kill_state import KillState, decode_kept, encode_kill_state, kill_key
from worker.contract.selector import (
    DEFAULT_MAX_BATCHES,
    DEFAULT_STATUSES,
    MAX_BATCHES_CAP,
    PARENT_METADATA_KEY,
    Criteria,
    LiftCommand,
    SelectorCommand,
    check_until,
    child_command_id,
    selector_key,
)
from worker.contract.selector_event import (
    CE_TYPE_SELECTOR_FINAL,
    CE_TYPE_SELECTOR_PROGRESS,
    MatchedBatch,
    SelectorEvent,
    SelectorOutcome,
    selector_event_headers,
)
from worker.contract.signal import BatchSignal, decode_signal, encode_signal
from worker.contract.types import (
    BATCH_ID_PATTERN,
    FAILURE_OUTCOMES,
    MAX_MESSAGE_CHARS,
    NAME_PATTERN,
    TERMINAL_STATUSES,
    TIMESTAMP_FIELDS,
    BatchError,
    BatchSnapshot,
    BatchStatus,
    DeadLetterReason,
    Outcome,
    RequestCounts,
    batch_key,
)

__all__ = [
    "BATCH_ID_PATTERN",
    "CE_TYPE_FINAL",
    "CE_TYPE_SELECTOR_FINAL",
    "CE_TYPE_SELECTOR_PROGRESS",
    "CE_TYPE_STATE",
    "DEFAULT_MAX_BATCHES",
    "DEFAULT_STATUSES",
    "DLQ_MESSAGE_HEADER",
    "DLQ_REASON_HEADER",
    "DLQ_TIME_HEADER",
    "FAILURE_OUTCOMES",
    "MAX_BATCHES_CAP",
    "MAX_MESSAGE_CHARS",
    "MAX_WAITING",
    "NAME_PATTERN",
    "PARENT_METADATA_KEY",
    "TERMINAL_STATUSES",
    "TIMESTAMP_FIELDS",
    "BatchError",
    "BatchSignal",
    "BatchSnapshot",
    "BatchStateEvent",
    "BatchStatus",
    "CancelCommand",
    "Command",
    "CommandCloudEvent",
    "Criteria",
    "DeadLetterReason",
    "FailureDetail",
    "FollowState",
    "InvalidCommand",
    "KillState",
    "LiftCommand",
    "MatchedBatch",
    "Outcome",
    "RequestCounts",
    "SelectorCommand",
    "SelectorEvent",
    "SelectorOutcome",
    "WaitingCommand",
    "batch_key",
    "check_until",
    "child_command_id",
    "dead_letter_headers",
    "decode_any",
    "decode_command",
    "decode_follow_state",
    "decode_kept",
    "decode_signal",
    "encode_event",
    "encode_follow_state",
    "encode_kill_state",
    "encode_signal",
    "event_headers",
    "event_key",
    "failure_event",
    "kill_key",
    "observed_event",
    "selector_event_headers",
    "selector_key",
    "state_event",
]
