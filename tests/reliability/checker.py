"""The reliability checker: what every scenario asserts, computed the same way for all of them.

Modelled on Kafka's ``validate_delivery`` / ``OffsetValidationTest`` and Jepsen's queue checkers:

* **lost** — a command that was acknowledged by the broker and never produced any event at all;
* **unfinished** — a command with events but no final event (stuck mid-follow);
* **duplicates** — a command with more than one *distinct* final event after de-duplication by
  ``event_id`` (two different outcomes for one command: the promise is broken);
* **redelivered** — a command whose final event was *published* more than once with the same
  ``event_id``: allowed by at-least-once (consumers de-duplicate) but the signature of redelivery,
  which the negative control must be able to see;
* **republished** — event records (any event, not only finals) published again with an ``event_id``
  already seen: what a handover must not cause, and what each crash window may cause only for its own
  commands;
* **uncommitted** — records between the group's committed offset and the log end (Kafka's
  ``last_commit == position`` invariant once all work is done);
* **dlq_missing** — an invalid command with no dead letter carrying its original bytes;
* **leaks** — records or worker logs that contain an API key.

``check`` returns one ``Row``; ``Row.violations`` names what is wrong (empty = all promises kept),
and ``format_table`` prints the rows of a run as the table ``make reliability`` shows.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field

from tests.support.events import EventLog

__all__ = ["Row", "check", "format_table"]


@dataclass
class Row:
    scenario: str
    commands: int
    final_events: int  # distinct final events (after de-dup by event_id)
    final_records: int  # final records as published (duplicates included)
    lost: int
    unfinished: int
    duplicates: int
    redelivered: int
    uncommitted: int
    dlq: int
    dlq_missing: int
    leaks: int
    seconds: float
    republished: int = 0
    posts_per_batch: int | None = None  # the most cancel POSTs any batch of the scenario received
    lag_s: float | None = None  # after the last cancel was accepted, until the group's lag was 0
    notes: str = ""
    examples: dict[str, list[str]] = field(default_factory=dict)

    def violations(self, *, allow_redelivery: bool = True) -> list[str]:
        """What broke a promise; ``allow_redelivery=False`` also counts any event published twice (strict mode)."""
        out = []
        for name in ("lost", "unfinished", "duplicates", "uncommitted", "dlq_missing", "leaks"):
            value = getattr(self, name)
            if value:
                out.append(f"{name}={value} e.g. {self.examples.get(name, [])[:3]}")
        if not allow_redelivery and self.redelivered:
            out.append(f"redelivered={self.redelivered} e.g. {self.examples.get('redelivered', [])[:3]}")
        if not allow_redelivery and self.republished:
            out.append(f"republished={self.republished} e.g. {self.examples.get('republished', [])[:3]}")
        return out

    @property
    def ok(self) -> bool:
        return not self.violations()


def check(
    scenario: str,
    *,
    sent: Collection[str],
    events: EventLog,
    started: float,
    committed: dict[int, int] | None = None,
    ends: dict[int, int] | None = None,
    dlq: EventLog | None = None,
    dead_letters: Iterable[bytes | None] = (),
    secrets: Sequence[str] = (),
    logs: Iterable[str] = (),
    notes: str = "",
) -> Row:
    """Compare what was sent with what was published, committed and dead-lettered.

    ``sent``: command ids acknowledged by the broker; ``dead_letters``: the original values of records
    that must be in the DLQ (a multiset: the same bytes sent twice must be dead-lettered twice).
    """
    lost, unfinished, duplicates, redelivered, republished = [], [], [], [], []
    distinct = records = 0
    for cid in sent:
        published = events.by_command.get(cid, [])
        seen = Counter(p.value.get("event_id") for p in published)
        republished += [f"{cid}:{eid}" for eid, n in seen.items() for _ in range(n - 1)]
        finals = [p for p in published if p.value.get("final")]
        ids = Counter(p.value.get("event_id") for p in finals)
        distinct += len(ids)
        records += len(finals)
        if not published:
            lost.append(cid)
        elif not finals:
            unfinished.append(cid)
        if len(ids) > 1:
            duplicates.append(cid)
        if any(n > 1 for n in ids.values()):
            redelivered.append(cid)
    uncommitted = 0
    behind: list[str] = []
    if ends is not None:
        for partition, end in sorted(ends.items()):
            gap = end - (committed or {}).get(partition, 0)
            if gap:
                uncommitted += gap
                behind.append(f"p{partition}: committed {(committed or {}).get(partition)} end {end}")
    wanted = Counter(v or b"" for v in dead_letters)
    got = Counter(p.raw or b"" for p in dlq.records) if dlq is not None else Counter()
    missing = wanted - got
    leak_where: list[str] = []
    for secret in secrets:
        needle = secret.encode()
        for log in (events, *([dlq] if dlq is not None else [])):
            for p in log.records:
                blob = (p.raw or b"") + b"".join(p.headers.values()) + (p.key or b"")
                if needle in blob:
                    leak_where.append(f"{log.topic}@{p.partition}:{p.offset}")
        leak_where += [f"log line {i}" for text in logs for i, line in enumerate(text.splitlines()) if secret in line]
    return Row(
        scenario=scenario,
        commands=len(sent),
        final_events=distinct,
        final_records=records,
        lost=len(lost),
        unfinished=len(unfinished),
        duplicates=len(duplicates),
        redelivered=len(redelivered),
        uncommitted=uncommitted,
        dlq=len(dlq.records) if dlq is not None else 0,
        dlq_missing=sum(missing.values()),
        leaks=len(leak_where),
        seconds=time.monotonic() - started,
        republished=len(republished),
        notes=notes,
        examples={
            "lost": lost,
            "unfinished": unfinished,
            "duplicates": duplicates,
            "redelivered": redelivered,
            "republished": republished,
            "uncommitted": behind,
            "dlq_missing": [repr(v[:40]) for v in missing],
            "leaks": leak_where,
        },
    )


_COLUMNS = (
    ("scenario", "scenario"),
    ("commands", "commands"),
    ("final events", "final_events"),
    ("lost", "lost"),
    ("unfinished", "unfinished"),
    ("dups after de-dup", "duplicates"),
    ("redelivered", "redelivered"),
    ("re-published", "republished"),
    ("POSTs/batch", "posts_per_batch"),
    ("lag 0 after s", "lag_s"),
    ("uncommitted", "uncommitted"),
    ("DLQ", "dlq"),
    ("DLQ missing", "dlq_missing"),
    ("leaks", "leaks"),
    ("time s", "seconds"),
    ("verdict", "verdict"),
)


def format_table(rows: Sequence[Row]) -> str:
    """A plain-text table, one line per scenario, in the order the scenarios ran."""

    def cell(row: Row, attr: str) -> str:
        if attr == "seconds":
            return f"{row.seconds:.1f}"
        if attr == "lag_s":
            return "-" if row.lag_s is None else f"{row.lag_s:.1f}"
        if attr == "posts_per_batch":
            return "-" if row.posts_per_batch is None else str(row.posts_per_batch)
        if attr == "verdict":
            return ("ok" if row.ok else "FAIL") + (f" ({row.notes})" if row.notes else "")
        return str(getattr(row, attr))

    table = [[title for title, _ in _COLUMNS]] + [[cell(r, a) for _, a in _COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(_COLUMNS))]
    lines = [
        "  ".join(
            c.ljust(w) if i in (0, len(widths) - 1) else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in table
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
