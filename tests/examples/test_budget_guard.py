"""The budget guard's rule, pure: spend per team, and which accounts get a standing kill when it crosses."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from pydantic import ValidationError

from examples.budget_guard.__main__ import _team_budget
from examples.budget_guard.ledger import AccountRef, Ledger, SpendEvent
from examples.budget_guard.service import end_of_month, kill_id_for


def _spend(team: str, batch: str, usd: str, provider: str = "openai", account: str = "default") -> SpendEvent:
    return SpendEvent(team=team, provider=provider, account=account, batch_id=batch, cost_usd=Decimal(usd))


def test_crossing_the_budget_kills_once_per_account_the_team_spends_on() -> None:
    ledger = Ledger(budgets={"a": Decimal(10)})
    assert ledger.record(_spend("a", "b1", "4")) == []
    assert ledger.record(_spend("a", "b2", "6", provider="mistral")) == []  # exactly at budget: not crossed
    due = ledger.record(_spend("a", "b1", "0.01"))
    assert due == [AccountRef("mistral", "default"), AccountRef("openai", "default")]
    assert ledger.record(_spend("a", "b3", "1")) == []  # a new batch on a killed account: the kill covers it
    assert ledger.record(_spend("a", "b4", "1", account="eu")) == [AccountRef("openai", "eu")]  # a new account


def test_other_teams_and_teams_without_budget_are_left_alone() -> None:
    ledger = Ledger(budgets={"a": Decimal(1)})
    assert ledger.record(_spend("b", "x", "1000")) == []
    assert ledger.record(_spend("a", "y", "2")) == [AccountRef("openai", "default")]
    assert ledger.killed == {("a", AccountRef("openai", "default"))}


def test_default_budget_applies_to_unlisted_teams_and_money_sums_exactly() -> None:
    ledger = Ledger(budgets={}, default_budget=Decimal("0.3"))
    assert ledger.record(_spend("t", "b", "0.1")) == []
    assert ledger.record(_spend("t", "b", "0.2")) == []  # 0.1 + 0.2 == 0.3 exactly, not 0.30000000000000004
    assert ledger.spent["t"] == Decimal("0.3")


def test_spend_event_refuses_negative_or_non_finite_cost() -> None:
    for bad in ("-1", "NaN", "Infinity"):
        with pytest.raises(ValidationError):
            SpendEvent.model_validate({"team": "a", "provider": "p", "batch_id": "b", "cost_usd": bad})


def test_kill_ids_are_deterministic_per_team_account_and_period() -> None:
    ref, until = AccountRef("openai", "default"), datetime(2027, 1, 1, tzinfo=UTC)
    assert kill_id_for("a", ref, until) == kill_id_for("a", ref, until) != kill_id_for("b", ref, until)
    assert kill_id_for("a", ref, until) != kill_id_for("a", ref, datetime(2027, 2, 1, tzinfo=UTC))
    assert re.fullmatch(r"[0-9a-f-]{36}", kill_id_for("a", ref, until))


def test_the_period_ends_at_the_start_of_next_month() -> None:
    assert end_of_month(datetime(2026, 12, 3, 6, 0, tzinfo=UTC)) == datetime(2027, 1, 1, tzinfo=UTC)
    assert end_of_month(datetime(2026, 2, 28, 23, 59, tzinfo=UTC)) == datetime(2026, 3, 1, tzinfo=UTC)


def test_team_budget_argument() -> None:
    assert _team_budget("research=12.5") == ("research", Decimal("12.5"))
    for bad in ("research", "=3", "a=lots"):
        with pytest.raises(argparse.ArgumentTypeError):
            _team_budget(bad)
