"""Cancel by selector, end to end: a real broker, a worker process, real HTTP to the emulator's batch lists.

Every test isolates its batches inside the shared emulator by a creation-time window of its own (an hour of
2001, picked at random), which every dialect can evaluate, plus a metadata pair where the dialect has metadata.
The emulator's request log proves which batches got a cancel POST and that the list was read page by page.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from batch_cancel_emulator.testing import Emulator
from devstack.broker import KafkaBroker
from tests.support.events import EventLog
from tests.support.stack import DIALECTS, NATIVE, Stack, wait_committed
from worker.contract import child_command_id, selector_key

#: One page here: Mistral filters status, metadata and creation time on its server; Together's list is one
#: unpaginated array.
SINGLE_PAGE = {"mistral", "together"}
#: Dialects whose list items carry metadata (the rest are matched on the creation window alone).
WITH_METADATA = {"openai", "siliconflow", "dashscope", "deepinfra", "azure", "mistral"}


@pytest.fixture(scope="module")
def stack(kafka: KafkaBroker, emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(kafka, emulator, tmp_path_factory.mktemp("selectors"), dialects=DIALECTS + NATIVE)
    s.start_worker()
    yield s
    s.close()


def _window() -> tuple[int, int]:
    start = int(datetime(2001, 1, 1, tzinfo=UTC).timestamp()) + random.randrange(0, 300 * 24) * 3600
    return start, start + 3600


def _iso(unix: int) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat()


def _selector(dialect: str, window: tuple[int, int], team: str | None, **fields: Any) -> dict[str, Any]:
    match: dict[str, Any] = {"created_after": _iso(window[0]), "created_before": _iso(window[1])}
    if team is not None:
        match["metadata"] = {"team": team}
    return {
        "kind": "cancel_matching",
        "command_id": f"sel-test-{uuid.uuid4().hex[:12]}",
        "provider": dialect,
        "account": "default",
        "match": match,
        "reason": "e2e",
        "requested_by": "tests",
        **fields,
    }


async def _publish(s: Stack, command: dict[str, Any]) -> str:
    """Keyed ``provider/account/*`` as the contract asks of selectors and lifts."""
    producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        key = selector_key(command["provider"], command.get("account", "default")).encode()
        await producer.send_and_wait(s.commands, json.dumps(command).encode(), key=key)
    finally:
        await producer.stop()
    return str(command["command_id"])


def _population(s: Stack, dialect: str, window: tuple[int, int], team: str) -> tuple[list[str], list[str]]:
    """105 batches in the window: 5 running ones of the team (the matches) and 100 that must be left alone
    (finished, already cancelling, or another team's where the dialect has metadata); plus running batches of
    the team outside the window."""
    t0 = window[0] + 10
    emu = s.emulator
    hit = [emu.create_batch(dialect, metadata={"team": team}, created_at=t0 + i, cancelling_polls=1) for i in range(5)]
    miss = emu.create_batches(dialect, 60, metadata={"team": team}, created_at=t0 + 100, status="completed")
    miss += emu.create_batches(dialect, 20, metadata={"team": team}, created_at=t0 + 200, status="cancelling")
    other = "someone-else" if dialect in WITH_METADATA else team
    status = None if dialect in WITH_METADATA else "completed"
    miss += emu.create_batches(dialect, 20, metadata={"team": other}, created_at=t0 + 300, status=status)
    miss += emu.create_batches(dialect, 3, metadata={"team": team}, created_at=window[1] + 10)
    return hit, miss


def _posts(s: Stack, dialect: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in s.emulator.requests(dialect=dialect):
        if r["method"] == "POST" and r.get("batch_id"):
            counts[r["batch_id"]] = counts.get(r["batch_id"], 0) + 1
    return counts


@pytest.mark.parametrize("dialect", DIALECTS + NATIVE)
async def test_exactly_the_matching_batches_are_cancelled(stack: Stack, dialect: str) -> None:
    window, team = _window(), uuid.uuid4().hex[:8]
    hit, miss = _population(stack, dialect, window, team)
    command = _selector(dialect, window, team if dialect in WITH_METADATA else None)
    async with EventLog(stack.bootstrap, stack.events) as log:
        cid = await _publish(stack, command)
        children = [child_command_id(cid, dialect, "default", b) for b in hit]
        await log.wait_finals([cid, *children], timeout=90)
        final = log.finals(cid)[0]
        assert (final["kind"], final["outcome"], final["matched"], final["published"]) == ("selector", "expanded", 5, 5)
        assert sorted(final["children"]) == sorted(children)
        if dialect not in SINGLE_PAGE:  # every batch of the dialect was listed: more than one page
            assert final["listed"] >= 108 and final["pages"] >= 2
        assert {log.finals(c)[0]["outcome"] for c in children} == {"cancelled"}
        assert {log.finals(c)[0]["batch_id"] for c in children} == set(hit)
    posts = _posts(stack, dialect)
    assert {b: posts.get(b) for b in hit} == dict.fromkeys(hit, 1)
    assert not [b for b in miss if b in posts]
    await wait_committed(stack)


async def test_a_dry_run_sends_no_cancel_and_previews_the_matches(stack: Stack) -> None:
    window, team = _window(), uuid.uuid4().hex[:8]
    hit, miss = _population(stack, "openai", window, team)
    async with EventLog(stack.bootstrap, stack.events) as log:
        cid = await _publish(stack, _selector("openai", window, team, dry_run=True))
        await log.wait_finals([cid], timeout=60)
        final = log.finals(cid)[0]
        assert (final["outcome"], final["matched"], final["published"]) == ("previewed", 5, 0)
        assert sorted(m["batch_id"] for m in final["matches"]) == sorted(hit)
        assert {m["metadata"]["team"] for m in final["matches"]} == {team}
    posts = _posts(stack, "openai")
    assert not [b for b in hit + miss if b in posts]


async def test_too_many_matches_cancel_nothing_and_say_how_many(stack: Stack) -> None:
    window, team = _window(), uuid.uuid4().hex[:8]
    hit, _ = _population(stack, "mistral", window, team)
    async with EventLog(stack.bootstrap, stack.events) as log:
        cid = await _publish(stack, _selector("mistral", window, team, max_batches=4))
        await log.wait_finals([cid], timeout=60)
        final = log.finals(cid)[0]
        assert final["outcome"] == "rejected" and final["detail"]["code"] == "too_many_matches"
        assert final["detail"]["message"].startswith("5 batches match; max_batches is 4")
    posts = _posts(stack, "mistral")
    assert not [b for b in hit if b in posts]


@pytest.mark.parametrize(
    ("dialect", "match", "words"),
    [
        ("anthropic", {"metadata": {"team": "x"}}, "anthropic cannot evaluate metadata"),
        ("anthropic", {"model": "claude"}, "anthropic cannot evaluate model"),
        ("together", {"metadata": {"team": "x"}}, "together cannot evaluate metadata"),
        ("xai", {"metadata": {"team": "x"}}, "xai cannot evaluate metadata"),
    ],
)
async def test_a_criterion_the_provider_cannot_evaluate_is_invalid(
    stack: Stack, dialect: str, match: dict[str, Any], words: str
) -> None:
    command = {**_selector(dialect, _window(), None), "match": match}
    async with EventLog(stack.bootstrap, stack.events) as log:
        cid = await _publish(stack, command)
        await log.wait_finals([cid], timeout=30)
        final = log.finals(cid)[0]
        assert final["outcome"] == "invalid" and final["detail"]["code"] == "unsupported_criterion"
        assert words in final["detail"]["message"]


@pytest.mark.parametrize(
    ("change", "code", "words"),
    [
        ({"account": "nobody"}, "unknown_account", "not configured"),
        ({"until": "2001-01-01T00:00:00Z"}, "schema_violation", "already passed"),
        ({"until": (datetime.now(UTC) + timedelta(days=60)).isoformat()}, "schema_violation", "days ahead"),
        ({"max_batches": 10_001}, "schema_violation", "max_batches"),
    ],
)
async def test_bad_selectors_end_invalid_with_their_reason(
    stack: Stack, change: dict[str, Any], code: str, words: str
) -> None:
    command = {**_selector("openai", _window(), "t"), **change}
    async with EventLog(stack.bootstrap, stack.events) as log:
        cid = await _publish(stack, command)
        await log.wait_finals([cid], timeout=30)
        final = log.finals(cid)[0]
        assert final["outcome"] == "invalid" and final["detail"]["code"] == code
        assert words in final["detail"]["message"]


async def test_a_standing_kill_cancels_batches_started_later_until_lifted(stack: Stack) -> None:
    window, team = _window(), uuid.uuid4().hex[:8]
    first = stack.emulator.create_batch("openai", metadata={"team": team}, created_at=window[0] + 1)
    until = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    command = _selector("openai", window, team, until=until, sweep_interval_s=10)
    async with EventLog(stack.bootstrap, stack.events) as log:
        cid = await _publish(stack, command)
        await log.wait_finals([child_command_id(cid, "openai", "default", first)], timeout=60)
        later = stack.emulator.create_batch("openai", metadata={"team": team}, created_at=window[0] + 2)
        await log.wait_finals([child_command_id(cid, "openai", "default", later)], timeout=60)
        progress = [p.value for p in log.by_command[cid] if not p.value["final"]]
        assert progress and progress[-1]["standing"] and progress[-1]["sweep"] >= 2
        assert not log.finals(cid)
        lift = {
            "kind": "lift_kill",
            "command_id": f"lift-{uuid.uuid4().hex[:8]}",
            "provider": "openai",
            "account": "default",
            "kill_id": cid,
            "reason": "done",
            "requested_by": "tests",
        }
        await _publish(stack, lift)
        await log.wait_finals([cid, lift["command_id"]], timeout=30)
        assert log.finals(cid)[0]["outcome"] == "ended" and log.finals(cid)[0]["detail"]["code"] == "lifted"
        assert log.finals(lift["command_id"])[0]["outcome"] == "lifted"
    posts = _posts(stack, "openai")
    assert (posts.get(first), posts.get(later)) == (1, 1)
