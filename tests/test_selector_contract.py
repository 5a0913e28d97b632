"""Selector and lift commands on the wire: what decodes, what is refused and why."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from worker.contract import (
    MAX_BATCHES_CAP,
    DeadLetterReason,
    InvalidCommand,
    LiftCommand,
    SelectorCommand,
    check_until,
    child_command_id,
    decode_any,
    decode_command,
    selector_key,
)

SELECTOR: dict[str, Any] = {
    "kind": "cancel_matching",
    "command_id": "kill-1",
    "provider": "openai",
    "account": "team-a",
    "match": {"metadata": {"team": "eval"}, "statuses": ["in_progress"], "created_before": "2026-12-01T00:00:00Z"},
    "reason": "team eval over budget",
    "requested_by": "budget-guard",
}


def _decode(body: Any) -> Any:
    return decode_any(json.dumps(body).encode(), max_bytes=65536)


def _refused(body: Any) -> InvalidCommand:
    with pytest.raises(InvalidCommand) as caught:
        _decode(body)
    return caught.value


def test_a_selector_decodes_with_its_defaults() -> None:
    command = _decode(SELECTOR)
    assert isinstance(command, SelectorCommand)
    assert (command.max_batches, command.dry_run, command.until, command.sweep_interval_s) == (100, False, None, 60.0)
    assert command.key == "openai/team-a/*" == selector_key("openai", "team-a")
    assert not command.standing


def test_a_lift_decodes() -> None:
    lift = _decode(
        {
            **{k: SELECTOR[k] for k in ("provider", "account", "reason", "requested_by")},
            "kind": "lift_kill",
            "command_id": "lift-1",
            "kill_id": "kill-1",
        }
    )
    assert isinstance(lift, LiftCommand) and lift.kill_id == "kill-1" and lift.key == "openai/team-a/*"


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"account": None}, "account"),
        ({"reason": None}, "reason"),
        ({"requested_by": None}, "requested_by"),
        ({"max_batches": MAX_BATCHES_CAP + 1}, "max_batches"),
        ({"max_batches": 0}, "max_batches"),
        ({"sweep_interval_s": 1}, "sweep_interval_s"),
        ({"dry_run": True, "until": "2099-01-01T00:00:00Z"}, "dry_run previews once"),
        ({"match": {"statuses": ["completed"]}}, "statuses"),
        ({"match": {"colour": "red"}}, "colour"),
        ({"batch_id": "batch_1"}, "batch_id"),
        ({"until": "2099-01-01T00:00:00"}, "until"),
    ],
)
def test_bad_selectors_are_schema_violations_that_say_where(change: dict[str, Any], words: str) -> None:
    body = {k: v for k, v in {**SELECTOR, **change}.items() if v is not None}
    refused = _refused(body)
    assert refused.reason is DeadLetterReason.SCHEMA_VIOLATION
    assert words in refused.message and refused.command_id == "kill-1"


def test_an_unknown_kind_is_refused_and_never_taken_for_a_cancel() -> None:
    for kind in ("cancel_all", ["cancel_matching"], 1):
        refused = _refused({**SELECTOR, "kind": kind})
        assert refused.reason is DeadLetterReason.SCHEMA_VIOLATION and "kind" in refused.message


def test_a_selector_in_a_cloudevent_envelope_is_refused() -> None:
    envelope = {"specversion": "1.0", "id": "1", "source": "s", "type": "t", "data": SELECTOR}
    refused = _refused(envelope)
    assert "CloudEvents envelope" in refused.message


def test_the_cancel_only_decoder_refuses_a_selector() -> None:
    with pytest.raises(InvalidCommand, match="expected a cancel command, not cancel_matching"):
        decode_command(json.dumps(SELECTOR).encode(), max_bytes=65536)


def test_until_must_be_ahead_and_within_the_cap() -> None:
    now = datetime(2026, 12, 3, tzinfo=UTC)
    ok = SelectorCommand.model_validate({**SELECTOR, "until": (now + timedelta(days=30)).isoformat()})
    past = SelectorCommand.model_validate({**SELECTOR, "until": (now - timedelta(seconds=1)).isoformat()})
    far = SelectorCommand.model_validate({**SELECTOR, "until": (now + timedelta(days=40)).isoformat()})
    assert check_until(ok, now) is None and ok.standing
    assert "already passed" in (check_until(past, now) or "")
    assert "32 days" in (check_until(far, now) or "")


def test_child_ids_are_stable_short_and_distinct() -> None:
    a = child_command_id("kill-1", "openai", "team-a", "batch_1")
    assert a == child_command_id("kill-1", "openai", "team-a", "batch_1")
    assert a != child_command_id("kill-1", "openai", "team-a", "batch_2")
    assert a != child_command_id("kill-2", "openai", "team-a", "batch_1")
    assert len(child_command_id("x" * 128, "openai", "team-a", "b" * 256)) == 40
