"""The publisher side without a broker: command building, encoding, trace headers, CLI output and exit codes,
and the budget guard's ledger."""

from __future__ import annotations

import argparse
import re
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from pydantic import ValidationError

from examples.budget_guard.__main__ import _team_budget
from examples.budget_guard.ledger import BatchRef, Ledger, SpendEvent
from examples.budget_guard.service import command_id_for
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


# --- the budget guard's ledger ----------------------------------------------------------------------------


def _spend(team: str, batch: str, usd: str, provider: str = "openai") -> SpendEvent:
    return SpendEvent(team=team, provider=provider, batch_id=batch, cost_usd=Decimal(usd))


def test_crossing_the_budget_cancels_every_batch_of_that_team_once() -> None:
    ledger = Ledger(budgets={"a": Decimal(10)})
    assert ledger.record(_spend("a", "b1", "4")) == []
    assert ledger.record(_spend("a", "b2", "6")) == []  # exactly at budget: not crossed
    due = ledger.record(_spend("a", "b1", "0.01"))
    assert due == [BatchRef("openai", "default", "b1"), BatchRef("openai", "default", "b2")]
    assert ledger.record(_spend("a", "b2", "1")) == []  # already cancelled
    assert ledger.record(_spend("a", "b3", "1")) == [BatchRef("openai", "default", "b3")]  # new batch, over budget


def test_other_teams_and_teams_without_budget_are_left_alone() -> None:
    ledger = Ledger(budgets={"a": Decimal(1)})
    assert ledger.record(_spend("b", "x", "1000")) == []
    assert ledger.record(_spend("a", "y", "2")) == [BatchRef("openai", "default", "y")]
    assert ledger.cancelled == {BatchRef("openai", "default", "y")}


def test_default_budget_applies_to_unlisted_teams_and_money_sums_exactly() -> None:
    ledger = Ledger(budgets={}, default_budget=Decimal("0.3"))
    assert ledger.record(_spend("t", "b", "0.1")) == []
    assert ledger.record(_spend("t", "b", "0.2")) == []  # 0.1 + 0.2 == 0.3 exactly, not 0.30000000000000004
    assert ledger.spent["t"] == Decimal("0.3")


def test_spend_event_refuses_negative_or_non_finite_cost() -> None:
    for bad in ("-1", "NaN", "Infinity"):
        with pytest.raises(ValidationError):
            SpendEvent.model_validate({"team": "a", "provider": "p", "batch_id": "b", "cost_usd": bad})


def test_guard_command_ids_are_deterministic_per_team_and_batch() -> None:
    ref = BatchRef("openai", "default", "b1")
    assert command_id_for("a", ref) == command_id_for("a", ref) != command_id_for("b", ref)
    assert re.fullmatch(r"[0-9a-f-]{36}", command_id_for("a", ref))


def test_team_budget_argument() -> None:
    assert _team_budget("research=12.5") == ("research", Decimal("12.5"))
    for bad in ("research", "=3", "a=lots"):
        with pytest.raises(argparse.ArgumentTypeError):
            _team_budget(bad)


async def test_leaving_an_event_follower_is_clean_when_aiokafka_leaks_its_own_cancellation() -> None:
    from tests.support.fake_kafka import LeakyStop
    from worker.publisher import EventFollower

    follower = EventFollower("127.0.0.1:1")
    await follower._consumer.stop()  # the real one was never started
    leaky = LeakyStop()
    follower._consumer = leaky
    await follower.__aexit__(None, None, None)  # no CancelledError reaches the caller's code
    assert leaky.stopped and leaky._client.closed
