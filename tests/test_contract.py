"""The contract's behaviour: decoding hostile bytes, building events, and the headers around both."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from worker import contract
from worker.contract import (
    CE_TYPE_FINAL,
    CE_TYPE_STATE,
    BatchSnapshot,
    BatchStateEvent,
    BatchStatus,
    CancelCommand,
    DeadLetterReason,
    FailureDetail,
    InvalidCommand,
    Outcome,
    dead_letter_headers,
    decode_command,
    encode_event,
    event_headers,
    event_key,
    failure_event,
    state_event,
)

LIMIT = 64 * 1024
T0 = datetime(2025, 3, 11, 9, 31, 2, 417000, tzinfo=UTC)
GOOD: dict[str, Any] = {"command_id": "c-1", "provider": "openai", "batch_id": "batch_abc123"}


def encoded(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def envelope(data: Any, **attrs: Any) -> bytes:
    return encoded({"specversion": "1.0", "id": "e-1", "source": "/test", "type": "t", **attrs, "data": data})


# --- decoding -----------------------------------------------------------------------------------------------


def test_plain_command_decodes_with_defaults() -> None:
    cmd = decode_command(encoded(GOOD), max_bytes=LIMIT)
    assert (cmd.account, cmd.follow, cmd.schema_version, cmd.metadata) == ("default", True, 1, {})
    assert cmd.key == "openai/default/batch_abc123"


def test_cloudevents_structured_envelope_yields_its_data() -> None:
    value = envelope(GOOD, datacontenttype="application/json; charset=utf-8", dapr_ext="kept", traceparent="00-x")
    assert decode_command(value, max_bytes=LIMIT) == CancelCommand(**GOOD)


def test_full_command_keeps_every_field() -> None:
    value = encoded(
        {
            **GOOD,
            "account": "team-a",
            "reason": "superseded",
            "requested_by": "alice",
            "requested_at": "2025-03-11T09:30:13+08:00",
            "follow": False,
            "follow_timeout_s": 30,
            "metadata": {"ticket": "OPS-1"},
        }
    )
    cmd = decode_command(value, max_bytes=LIMIT)
    assert cmd.requested_at == datetime(2025, 3, 11, 1, 30, 13, tzinfo=UTC)
    assert (cmd.follow, cmd.follow_timeout_s, cmd.metadata) == (False, 30.0, {"ticket": "OPS-1"})


DEEP = b'{"command_id":"c","provider":"p","batch_id":"b","metadata":' + b"[" * 300 + b"]" * 300 + b"}"
R = DeadLetterReason
MALFORMED: list[tuple[str, bytes | None, DeadLetterReason]] = [
    ("tombstone", None, R.INVALID_JSON),
    ("empty", b"", R.INVALID_JSON),
    ("2 MB", encoded({**GOOD, "reason": "x" * 2_000_000}), R.TOO_LARGE),
    ("invalid UTF-8", b'{"command_id":"\xff\xfe"}', R.INVALID_ENCODING),
    ("lone surrogate escape", encoded({**GOOD, "reason": "\ud800"}), R.INVALID_ENCODING),
    ("truncated", b'{"command_id":', R.INVALID_JSON),
    ("byte-order mark", b"\xef\xbb\xbf" + encoded(GOOD), R.INVALID_JSON),
    ("NaN", b'{"command_id":"c","provider":"p","batch_id":"b","follow_timeout_s":NaN}', R.INVALID_JSON),
    ("duplicate key", b'{"command_id":"c","provider":"p","batch_id":"ok","batch_id":"../x"}', R.INVALID_JSON),
    ("nested beyond json's limit", b"[" * 20_000 + b"]" * 20_000, R.INVALID_JSON),
    ("nested beyond pydantic's limit", DEEP, R.INVALID_JSON),
    ("array", encoded([GOOD]), R.SCHEMA_VIOLATION),
    ("string", b'"cancel batch_abc123"', R.SCHEMA_VIOLATION),
    ("null", b"null", R.SCHEMA_VIOLATION),
    ("../../x", encoded({**GOOD, "batch_id": "../../x"}), R.INVALID_BATCH_ID),
    ("batch/1", encoded({**GOOD, "batch_id": "batch/1"}), R.INVALID_BATCH_ID),
    ("%2e%2e", encoded({**GOOD, "batch_id": "%2e%2e"}), R.INVALID_BATCH_ID),
    ("inner ..", encoded({**GOOD, "batch_id": "a..b"}), R.INVALID_BATCH_ID),
    ("trailing newline", encoded({**GOOD, "batch_id": "batch_1\n"}), R.INVALID_BATCH_ID),
    ("fragment", encoded({**GOOD, "batch_id": "b#x"}), R.INVALID_BATCH_ID),
    ("batch_id a number", encoded({**GOOD, "batch_id": 12345}), R.INVALID_BATCH_ID),
    ("missing batch_id", encoded({"command_id": "c", "provider": "p"}), R.SCHEMA_VIOLATION),
    ("URL provider", encoded({**GOOD, "provider": "https://api.openai.com/v1"}), R.SCHEMA_VIOLATION),
    ("unknown field", encoded({**GOOD, "dry_run": True}), R.SCHEMA_VIOLATION),
    ("reason over 1 KiB", encoded({**GOOD, "reason": "x" * 1025}), R.SCHEMA_VIOLATION),
    ("follow as string", encoded({**GOOD, "follow": "yes"}), R.SCHEMA_VIOLATION),
    ("timeout as string", encoded({**GOOD, "follow_timeout_s": "30"}), R.SCHEMA_VIOLATION),
    ("naive requested_at", encoded({**GOOD, "requested_at": "2025-03-11T09:30:13"}), R.SCHEMA_VIOLATION),
    ("epoch requested_at", encoded({**GOOD, "requested_at": 1741685413}), R.SCHEMA_VIOLATION),
    ("schema_version 2", encoded({**GOOD, "schema_version": 2}), R.SCHEMA_VIOLATION),
    ("17 metadata keys", encoded({**GOOD, "metadata": {str(i): "" for i in range(17)}}), R.SCHEMA_VIOLATION),
    ("CE data not an object", envelope("cancel it"), R.SCHEMA_VIOLATION),
    (
        "CE data_base64",
        encoded({"specversion": "1.0", "id": "1", "source": "s", "type": "t", "data_base64": "e30="}),
        R.SCHEMA_VIOLATION,
    ),
    ("CE specversion 0.3", envelope(GOOD, specversion="0.3"), R.SCHEMA_VIOLATION),
    ("CE without id", encoded({"specversion": "1.0", "source": "s", "type": "t", "data": GOOD}), R.SCHEMA_VIOLATION),
    ("CE XML content type", envelope(GOOD, datacontenttype="application/xml"), R.SCHEMA_VIOLATION),
    ("CE bad batch_id", envelope({**GOOD, "batch_id": "../etc"}), R.INVALID_BATCH_ID),
]


@pytest.mark.parametrize(("value", "reason"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_values_are_refused_with_a_stable_reason(value: bytes | None, reason: DeadLetterReason) -> None:
    with pytest.raises(InvalidCommand) as info:
        decode_command(value, max_bytes=LIMIT)
    assert info.value.reason is reason
    assert 0 < len(info.value.message) <= contract.MAX_MESSAGE_CHARS
    assert info.value.message.isprintable()


def test_invalid_command_salvages_what_an_invalid_event_needs() -> None:
    with pytest.raises(InvalidCommand) as info:
        decode_command(encoded({**GOOD, "batch_id": "../../x"}), max_bytes=LIMIT)
    assert info.value.command_id == "c-1"
    assert info.value.partial == {"provider": "openai", "account": "default", "batch_id": "../../x"}
    assert "'../../x'" not in info.value.message  # names the field, never echoes the input


def test_salvage_skips_what_cannot_be_echoed() -> None:
    value = encoded({"command_id": "x" * 129, "provider": 7, "account": "a" * 300, "batch_id": "b/1"})
    with pytest.raises(InvalidCommand) as info:
        decode_command(value, max_bytes=LIMIT)
    assert info.value.command_id is None
    assert info.value.partial == {"batch_id": "b/1"}


def test_salvage_reads_inside_a_cloudevent() -> None:
    with pytest.raises(InvalidCommand) as info:
        decode_command(envelope({**GOOD, "extra": 1}), max_bytes=LIMIT)
    assert (info.value.command_id, info.value.partial["provider"]) == ("c-1", "openai")


def test_messages_are_bounded_and_printable_even_for_hostile_keys() -> None:
    value = encoded({**GOOD, "metadata": {f"k\n{i}" + "x" * 200: 5 for i in range(5)}})
    with pytest.raises(InvalidCommand) as info:
        decode_command(value, max_bytes=LIMIT)
    assert len(info.value.message) <= contract.MAX_MESSAGE_CHARS and "\n" not in info.value.message


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
FIELDS = st.sampled_from(["command_id", "provider", "account", "batch_id", "follow", "metadata", "specversion", "data"])
COMMANDISH = st.dictionaries(FIELDS, JSON | st.just("batch_1") | st.just("1.0"), max_size=8)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512) | JSON.map(encoded) | COMMANDISH.map(encoded))
def test_any_bytes_give_a_command_or_invalid_command(value: bytes) -> None:
    try:
        result = decode_command(value, max_bytes=LIMIT)
    except InvalidCommand as exc:
        assert isinstance(exc.reason, DeadLetterReason) and exc.message
        return
    assert isinstance(result, CancelCommand)


# --- events ---------------------------------------------------------------------------------------------------

CMD = CancelCommand(**GOOD)


def snap(status: BatchStatus, raw: str | None = None, **fields: Any) -> BatchSnapshot:
    return BatchSnapshot(status=status, provider_status=raw or status.value, **fields)


def test_state_event_carries_the_snapshot_and_normalises_zero_timestamps() -> None:
    s = snap(BatchStatus.CANCELLING, created_at=1741685413, cancelling_at=1741685461, completed_at=0, model="m")
    ev = state_event(CMD, s, BatchStatus.IN_PROGRESS, final=False, observed_at=T0)
    assert (ev.final, ev.outcome, ev.terminal, ev.previous_status) == (False, None, False, BatchStatus.IN_PROGRESS)
    assert (ev.created_at, ev.cancelling_at, ev.completed_at, ev.model) == (1741685413, 1741685461, None, "m")


@pytest.mark.parametrize("status", sorted(contract.TERMINAL_STATUSES))
def test_final_terminal_state_becomes_the_outcome(status: BatchStatus) -> None:
    ev = state_event(CMD, snap(status), None, final=True, observed_at=T0)
    assert ev.outcome == Outcome(status.value) and ev.terminal and ev.detail is None


def test_final_before_terminal_is_accepted() -> None:
    ev = state_event(CMD, snap(BatchStatus.CANCELLING), None, final=True)
    assert ev.outcome is Outcome.ACCEPTED and not ev.terminal


def test_event_id_is_deterministic_per_command_and_state() -> None:
    def eid(cmd: CancelCommand, status: BatchStatus, final: bool, raw: str | None = None) -> str:
        return state_event(cmd, snap(status, raw), None, final=final, observed_at=datetime.now(UTC)).event_id

    first = eid(CMD, BatchStatus.CANCELLING, False)
    assert first == eid(CMD, BatchStatus.CANCELLING, False)
    others = {
        eid(CMD, BatchStatus.IN_PROGRESS, False),
        eid(CMD, BatchStatus.UNKNOWN, False, "paused"),
        eid(CMD, BatchStatus.UNKNOWN, False, "resumed"),
        eid(CMD, BatchStatus.CANCELLING, True),
        eid(CMD, BatchStatus.CANCELLED, True),
        eid(CancelCommand(**{**GOOD, "command_id": "c-2"}), BatchStatus.CANCELLING, False),
        eid(CancelCommand(**{**GOOD, "batch_id": "batch_2"}), BatchStatus.CANCELLING, False),
    }
    assert first not in others and len(others) == 7


def test_failure_events() -> None:
    detail = FailureDetail(http_status=404, code="not_found", message="no such batch")
    ev = failure_event(
        command_id="c-1",
        outcome=Outcome.REJECTED,
        detail=detail,
        provider="openai",
        account="default",
        batch_id="batch_abc123",
        last_status=BatchStatus.CANCELLING,
    )
    assert (ev.final, ev.status, ev.terminal, ev.detail) == (True, BatchStatus.CANCELLING, False, detail)
    again = failure_event(
        command_id="c-1",
        outcome=Outcome.REJECTED,
        detail=detail,
        provider="openai",
        account="default",
        batch_id="batch_abc123",
    )
    assert again.event_id == ev.event_id
    invalid = failure_event(
        command_id="c-1", outcome=Outcome.INVALID, detail=detail, provider=None, account=None, batch_id="../x"
    )
    assert event_key(invalid) is None
    with pytest.raises(ValidationError, match="null only in an invalid event"):
        failure_event(
            command_id="c", outcome=Outcome.GAVE_UP, detail=detail, provider=None, account=None, batch_id=None
        )
    with pytest.raises(ValueError, match="not a failure outcome"):
        failure_event(command_id="c", outcome=Outcome.CANCELLED, detail=detail, provider="p", account="a", batch_id="b")


def test_failure_detail_message_is_truncated_not_refused() -> None:
    assert len(FailureDetail(http_status=500, code=None, message="x" * 5000).message) == 1024


EV = state_event(CMD, snap(BatchStatus.CANCELLED), BatchStatus.CANCELLING, final=True, observed_at=T0)


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"outcome": None}, "outcome must be set"),
        ({"final": False}, "outcome must be set"),
        ({"detail": {"message": "x"}}, "detail must be set"),
        ({"terminal": False}, "terminal must say"),
        ({"status": "cancelling", "terminal": False}, "terminal outcome must equal"),
        ({"batch_id": None}, "null only in an invalid event"),
        ({"observed_at": "2025-03-11T09:31:02"}, "timezone"),
    ],
)
def test_inconsistent_events_are_refused(change: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        BatchStateEvent.model_validate({**EV.model_dump(), **change})


def test_encode_event_is_compact_complete_json() -> None:
    raw = encode_event(EV)
    assert b": " not in raw and b", " not in raw
    data = json.loads(raw)
    assert set(data) == set(BatchStateEvent.model_fields)
    assert data["observed_at"] == "2025-03-11T09:31:02.417000Z"
    assert BatchStateEvent.model_validate_json(raw) == EV
    assert event_key(EV) == b"openai/default/batch_abc123"


def test_observed_at_is_stored_in_utc() -> None:
    ev = state_event(
        CMD, snap(BatchStatus.QUEUED), None, final=False, observed_at=T0.astimezone(timezone(timedelta(hours=8)))
    )
    assert ev.observed_at.utcoffset() == timedelta(0) and ev.observed_at == T0


# --- headers --------------------------------------------------------------------------------------------------


def test_event_headers_are_cloudevents_binary_mode() -> None:
    headers = event_headers(EV, source="urn:test", extra=[("traceparent", b"00-abc-def-01")])
    assert headers == [
        ("ce_specversion", b"1.0"),
        ("ce_id", EV.event_id.encode()),
        ("ce_source", b"urn:test"),
        ("ce_type", CE_TYPE_FINAL.encode()),
        ("ce_time", json.loads(encode_event(EV))["observed_at"].encode()),
        ("ce_subject", b"openai/default/batch_abc123"),
        ("ce_commandid", b"c-1"),
        ("ce_outcome", b"cancelled"),
        ("content-type", b"application/json"),
        ("traceparent", b"00-abc-def-01"),
    ]


def test_state_headers_have_no_outcome_and_keyless_events_no_subject() -> None:
    state = dict(event_headers(state_event(CMD, snap(BatchStatus.QUEUED), None, final=False), source="s"))
    assert state["ce_type"] == CE_TYPE_STATE.encode() and "ce_outcome" not in state
    detail = FailureDetail(http_status=None, code="invalid_json", message="m")
    invalid = failure_event(
        command_id="c", outcome=Outcome.INVALID, detail=detail, provider=None, account=None, batch_id=None
    )
    assert "ce_subject" not in dict(event_headers(invalid, source="s"))


def test_extra_headers_cannot_shadow_cloudevents_attributes() -> None:
    with pytest.raises(ValueError, match="ce_id"):
        event_headers(EV, source="s", extra=[("ce_id", b"forged")])


def test_dead_letter_headers_keep_the_originals_first_and_unchanged() -> None:
    original = [("traceparent", b"00-1"), ("bin", b"\xff\x00"), ("traceparent", b"00-2")]
    headers = dead_letter_headers(
        original,
        reason=DeadLetterReason.INVALID_BATCH_ID,
        message="batch_id: bad\nsecond line",
        topic="cmds",
        partition=3,
        offset=42,
        at=T0,
    )
    assert headers[:3] == original
    assert dict(headers[3:]) == {
        "__connect.errors.topic": b"cmds",
        "__connect.errors.partition": b"3",
        "__connect.errors.offset": b"42",
        "__connect.errors.exception.class.name": b"worker.contract.InvalidCommand",
        "__connect.errors.exception.message": b"invalid_batch_id: batch_id: bad?second line",
        "bcw.dlq.reason": b"invalid_batch_id",
        "bcw.dlq.message": b"batch_id: bad?second line",
        "bcw.dlq.time": b"2025-03-11T09:31:02.417000Z",
    }


def test_naive_times_are_refused_on_the_wire() -> None:
    with pytest.raises(ValueError, match="naive"):
        dead_letter_headers(
            [], reason=R.TOO_LARGE, message="m", topic="t", partition=0, offset=0, at=datetime(2025, 1, 1)
        )


def test_exported_names_exist() -> None:
    assert all(hasattr(contract, name) for name in contract.__all__)
