"""The checker itself, on hand-made logs: each violation is counted where it should be (fast, no broker)."""

from __future__ import annotations

import time
from typing import Any

from tests.reliability.checker import check, format_table
from tests.support.events import EventLog, Published


def _log(topic: str, *values: dict[str, Any], raw: bytes | None = None) -> EventLog:
    log = EventLog("unused:9092", topic)
    for i, v in enumerate(values):
        p = Published(v, raw if raw is not None else repr(v).encode(), {}, None, 0, i)
        log.records.append(p)
        if "command_id" in v:
            log.by_command[v["command_id"]].append(p)
    return log


def _ev(cid: str, event_id: str, final: bool) -> dict[str, Any]:
    return {"command_id": cid, "event_id": event_id, "final": final}


def test_a_clean_run_has_no_violations() -> None:
    events = _log("e", _ev("a", "1", False), _ev("a", "2", True), _ev("b", "3", True))
    row = check("clean", sent=["a", "b"], events=events, started=time.monotonic(), committed={0: 5}, ends={0: 5})
    assert row.ok and row.final_events == 2 and row.final_records == 2 and row.redelivered == 0


def test_each_violation_is_counted() -> None:
    events = _log(
        "e",
        _ev("stuck", "1", False),
        _ev("twice", "2", True),
        _ev("twice", "3", True),  # a second, different outcome: a real duplicate
        _ev("again", "4", True),
        _ev("again", "4", True),  # the same event republished: redelivery, allowed after de-dup
    )
    dlq = _log("d", {"x": 1}, raw=b"poison-1")
    row = check(
        "broken",
        sent=["lost", "stuck", "twice", "again"],
        events=events,
        started=time.monotonic(),
        committed={0: 3},
        ends={0: 5, 1: 2},
        dlq=dlq,
        dead_letters=[b"poison-1", b"poison-1", b"poison-2"],
    )
    assert (row.lost, row.unfinished, row.duplicates, row.redelivered) == (1, 1, 1, 1)
    assert (row.uncommitted, row.dlq, row.dlq_missing) == (4, 1, 2)
    assert len(row.violations()) == 5
    assert len(row.violations(allow_redelivery=False)) == 7  # + redelivered finals, + republished events
    assert "FAIL" in format_table([row])


def test_a_secret_anywhere_is_a_leak() -> None:
    events = _log("e", _ev("a", "1", True), raw=b'{"detail": "Bearer sk-emulator"}')
    row = check("leak", sent=["a"], events=events, started=0.0, secrets=["sk-emulator"], logs=["ok\nkey sk-emulator"])
    assert row.leaks == 2 and not row.ok


def test_republished_counts_every_repeated_event_not_only_finals() -> None:
    events = _log(
        "e",
        _ev("a", "s1", False),
        _ev("a", "s1", False),  # a state event told twice (a handover that lost "told")
        _ev("a", "f1", True),
        _ev("b", "f2", True),
        _ev("b", "f2", True),
        _ev("b", "f2", True),
    )
    row = check("republished", sent=["a", "b"], events=events, started=time.monotonic())
    assert row.republished == 3 and row.redelivered == 1
    assert row.examples["republished"][0] == "a:s1"
    row.posts_per_batch, row.lag_s = 1, 2.25
    table = format_table([row])
    assert "re-published" in table and "2.2" in table
