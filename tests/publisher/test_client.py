"""The publisher side without a broker: command building, encoding, trace headers, CLI output and exit codes
(the budget guard's ledger is tested in tests/examples/test_budget_guard.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from pydantic import ValidationError

from worker.contract import BatchStateEvent, DeadLetterReason, InvalidCommand, decode_command
from worker.publisher import build_command, encode_command, publish_cancel_sync, trace_headers
from worker.publisher.cli import EXIT_CODES, exit_code, format_event, main


def test_build_command_defaults_an_id_and_a_time_and_keeps_given_fields() -> None:
    cmd = build_command("openai", "batch_1", reason="runaway", follow=False, metadata={"team": "a"})
    assert uuid.UUID(cmd.command_id) and cmd.account == "default" and cmd.requested_at is not None
    assert cmd.requested_at.tzinfo is not None and cmd.follow is False and cmd.metadata == {"team": "a"}
    assert build_command("openai", "b", command_id="mine").command_id == "mine"
    assert cmd.key == "openai/default/batch_1"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"batch_id": "../etc"},
        {"batch_id": "b/1"},
        {"provider": "https://evil.example"},
        {"folow": False},  # a typo must not silently become a followed cancel
        {"follow_timeout_s": -1},
    ],
)
def test_build_command_refuses_what_the_worker_would_dead_letter(kwargs: dict[str, Any]) -> None:
    args = {"provider": "openai", "batch_id": "batch_1", **kwargs}
    with pytest.raises(ValidationError):
        build_command(args.pop("provider"), args.pop("batch_id"), **args)


def test_encoded_command_is_accepted_by_the_workers_strict_decoder() -> None:
    cmd = build_command("siliconflow", "batch_x", account="research", requested_at=datetime(2025, 3, 11, tzinfo=UTC))
    value = encode_command(cmd)
    assert decode_command(value, max_bytes=65536) == cmd
    assert b'"reason"' not in value  # unset optional fields are left out, not sent as null


def test_encode_command_refuses_a_command_over_the_workers_size_limit() -> None:
    cmd = build_command("openai", "b", metadata={f"k{i}": "v" * 500 for i in range(16)})
    with pytest.raises(InvalidCommand) as err:
        encode_command(cmd, max_bytes=4096)
    assert err.value.reason is DeadLetterReason.TOO_LARGE


def test_trace_headers_carry_the_w3c_traceparent_of_the_given_context() -> None:
    span = NonRecordingSpan(SpanContext(0xABC, 0xDEF, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED)))
    headers = dict(trace_headers(trace.set_span_in_context(span)))
    assert headers["traceparent"] == f"00-{0xABC:032x}-{0xDEF:016x}-01".encode()


def test_trace_headers_are_empty_without_a_valid_span() -> None:
    assert trace_headers(trace.set_span_in_context(trace.INVALID_SPAN)) == []


async def test_the_sync_wrapper_refuses_to_run_inside_an_event_loop() -> None:
    with pytest.raises(RuntimeError, match="await publish_cancel"):
        publish_cancel_sync("127.0.0.1:1", "openai", "batch_1")


def _event(**fields: Any) -> BatchStateEvent:
    base: dict[str, Any] = {
        "event_id": "e1",
        "previous_status": None,
        "terminal": False,
        "command_id": "c1",
        "provider": "openai",
        "account": "default",
        "batch_id": "b1",
        "status": "cancelling",
        "provider_status": "cancelling",
        "final": False,
        "outcome": None,
        "detail": None,
        "observed_at": "2025-03-11T09:30:13.123456Z",
    }
    event = base | fields
    if event["final"]:  # a final event is what the worker sends for its outcome (the contract checks it)
        outcome = event["outcome"]
        if outcome in {"cancelled", "completed", "failed", "expired"}:
            event = base | {"status": outcome, "provider_status": outcome, "terminal": True} | fields
        elif outcome in {"rejected", "gave_up", "invalid"} and event["detail"] is None:
            event["detail"] = {"http_status": None, "code": "x", "message": "why"}
    return BatchStateEvent.model_validate(event)


@pytest.mark.parametrize(
    ("outcome", "code"),
    [
        ("cancelled", 0),
        ("completed", 0),
        ("failed", 0),
        ("expired", 0),
        ("accepted", 0),
        ("rejected", 3),
        ("gave_up", 4),
        ("invalid", 5),
    ],
)
def test_exit_code_per_outcome(outcome: str, code: int) -> None:
    assert exit_code(_event(final=True, outcome=outcome)) == code


def test_failure_exit_codes_are_distinct_and_leave_room_for_usage_kafka_and_timeout() -> None:
    assert len(set(EXIT_CODES.values())) == len(EXIT_CODES)
    assert not set(EXIT_CODES.values()) & {0, 1, 2, 6}


def test_format_event_shows_time_status_batch_and_command() -> None:
    line = format_event(_event())
    assert line.startswith("09:30:13.123") and "cancelling" in line and "openai/default/b1" in line and "c1" in line


def test_format_event_explains_a_rejection() -> None:
    detail = {"http_status": 401, "code": "invalid_api_key", "message": "Incorrect API key"}
    line = format_event(_event(final=True, outcome="rejected", status=None, provider_status=None, detail=detail))
    assert "FINAL rejected" in line and "HTTP 401 invalid_api_key: Incorrect API key" in line


def test_format_event_marks_raw_provider_status_and_already_terminal() -> None:
    line = format_event(_event(status="queued", provider_status="in_queue", already_terminal=True))
    assert "provider_status=in_queue" in line and "already_terminal" in line


def test_cli_invalid_batch_id_exits_2_before_touching_kafka(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["publish", "--provider", "openai", "--batch-id", "../x", "--bootstrap-servers", "127.0.0.1:1"])
    assert code == 2
    assert "invalid command, nothing published" in capsys.readouterr().err


def test_cli_requires_provider_and_batch_id() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["publish", "--batch-id", "b1"])
    assert exc.value.code == 2


async def test_leaving_an_event_follower_is_clean_when_aiokafka_leaks_its_own_cancellation() -> None:
    from tests.support.fake_kafka import LeakyStop
    from worker.publisher import EventFollower

    follower = EventFollower("127.0.0.1:1")
    await follower._consumer.stop()  # the real one was never started
    leaky = LeakyStop()
    follower._consumer = leaky
    await follower.__aexit__(None, None, None)  # no CancelledError reaches the caller's code
    assert leaky.stopped and leaky._client.closed
