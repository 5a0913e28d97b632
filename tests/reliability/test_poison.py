"""Scenario 6: thousands of poison and hostile records mixed with valid commands, against one worker.

Why a seeded ``random`` generator rather than Hypothesis: every example here costs a broker round trip and
a decision by a separate worker process, and the point is one long run with thousands of them interleaved
with valid work (back-pressure, DLQ publishing and following at the same time). ``@given`` runs the test
body once per example and shrinks failures of a pure function; the contract decoder already gets that in
``tests/test_contract.py``. A fixed seed (``RELIABILITY_SEED`` to vary it) makes every run reproducible,
and each generator knows by construction which dead-letter reasons its values may get.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

import pytest

from batch_cancel_emulator.shapes import PREFIXES
from tests.reliability.conftest import PrivateStack, RecordRow
from tests.reliability.harness import alive, conclude, finished, publish, wait_committed, wait_for
from tests.support.events import EventLog

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("RELIABILITY_SEED", "20261110"))
INVALID = 2000
CONFIGURED = ("openai", "siliconflow", "dashscope", "deepinfra")
JSONISH = frozenset({"invalid_json", "schema_violation", "invalid_encoding"})
BAD_IDS = [
    "../../etc/passwd", "..", "a/../../b", "%2e%2e%2fadmin", "batch_1/cancel", "batch_1?x=1", "batch#frag",
    "https://evil.example/v1/batches/x", "//evil.example/x", "batch\\..\\x", "batch\x00", "b\u0430tch",
    " batch", "batch ", "", "a" * 300, ".hidden", "-x", "a..b", "b%2F..%2F", "b;rm -rf /", "b\n", "\u0451\u0436",
    "_x", "x/", "/x", "x" * 257, "..%2f", "batch_1/../../../_admin/reset",
]  # fmt: skip
#: Valid by the contract, unknown to the emulator: answered 404, so the command ends ``rejected``.
ODD_VALID_IDS = ["evil.example:443", "a.b.c", "x:y:z", "A" * 256, "0", "batch.json", "http:evil", "b-._:"]


@dataclass
class Case:
    value: bytes | None
    reasons: frozenset[str]
    command_id: str | None = None  # set when the value is a JSON object with a readable command_id


def _cmd(rng: random.Random, **fields: object) -> tuple[str, bytes]:
    cid = f"rel6-{uuid.UUID(int=rng.getrandbits(128))}"
    body = {"command_id": cid, "provider": "openai", "batch_id": "batch_poison", **fields}
    return cid, json.dumps(body).encode()


def _random_bytes(rng: random.Random) -> Case:
    return Case(rng.randbytes(rng.randint(1, 300)), JSONISH)


def _empty(rng: random.Random) -> Case:
    return Case(rng.choice([b"", None]), frozenset({"invalid_json"}))


def _bad_utf8(rng: random.Random) -> Case:
    junk = rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"]) + rng.randbytes(3)
    return Case(b'{"command_id":"' + junk + b'","provider":"openai","batch_id":"b1"}', frozenset({"invalid_encoding"}))


def _surrogate(rng: random.Random) -> Case:
    return Case(b'{"command_id":"x\\ud800","provider":"openai","batch_id":"b1"}', frozenset({"invalid_encoding"}))


def _deep(rng: random.Random) -> Case:
    depth = rng.randint(1_000, 40_000)
    opener, closer = rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
    # Past 64 KiB (about 13,000 levels) the size check comes first.
    return Case(opener * depth + b"1" + closer * depth, frozenset({"invalid_json", "schema_violation", "too_large"}))


def _huge(rng: random.Random) -> Case:
    if rng.random() < 0.2:  # beyond BCW_MAX_COMMAND_BYTES (64 KiB): refused before parsing
        return Case(_cmd(rng, reason="y" * rng.randint(70_000, 300_000))[1], frozenset({"too_large"}))
    cid, value = _cmd(rng, reason="x" * rng.randint(1_025, 50_000))
    return Case(value, frozenset({"schema_violation"}), cid)


def _bad_batch_id(rng: random.Random) -> Case:
    bad = rng.choice(BAD_IDS) + rng.choice(["", "", "/cancel", "/../x", "?y=2"])
    cid, value = _cmd(rng, batch_id=bad, provider=rng.choice(CONFIGURED))
    return Case(value, frozenset({"invalid_batch_id", "schema_violation"}), cid)


def _unknown_provider(rng: random.Random) -> Case:
    name = rng.choice(["anthropic", "openai2", "groq", "p" + "".join(rng.choices("abcdefghij-_0", k=10))])
    cid, value = _cmd(rng, provider=name)
    return Case(value, frozenset({"unknown_provider"}), cid)


def _url_provider(rng: random.Random) -> Case:
    bad = rng.choice(["https://evil.example/v1", "openai/../x", "OPENAI", "open ai", "", "a" * 65, "127.0.0.1:80"])
    cid, value = _cmd(rng, provider=bad)
    return Case(value, frozenset({"schema_violation"}), cid)


def _unknown_account(rng: random.Random) -> Case:
    cid, value = _cmd(rng, account=f"acct-{rng.randint(0, 10**6)}")
    return Case(value, frozenset({"unknown_account"}), cid)


def _wrong_types(rng: random.Random) -> Case:
    fields: dict[str, object] = rng.choice(
        [
            {"follow": "yes"},
            {"follow_timeout_s": -1},
            {"metadata": {f"k{i}": "v" for i in range(17)}},
            {"schema_version": 2},
            {"dry_run": True},
            {"requested_at": "yesterday"},
            {"batch_id": 12345},
            {"data_base64": "eyJ9"},
        ]
    )
    cid, value = _cmd(rng, **fields)
    return Case(value, frozenset({"schema_violation", "invalid_batch_id"}), cid)


def _json_oddities(rng: random.Random) -> Case:
    value = rng.choice(
        [
            b'{"command_id":"a","command_id":"b","provider":"openai","batch_id":"b1"}',
            b'{"command_id":"n","provider":"openai","batch_id":"b1","follow_timeout_s":NaN}',
            b"[1,2,3]",
            b'"batch_1"',
            b"null",
            b"true",
            b"1e999999",
            b'{"specversion":"1.0","id":"1","source":"x","type":"t","data_base64":"e30="}',
            b'{"specversion":"1.0","id":"1","source":"x","type":"t","data":{"batch_id":"../x"}}',
            b"\xef\xbb\xbf{}",
        ]
    )
    return Case(value, JSONISH | {"invalid_batch_id"})


GENERATORS: list[tuple[Callable[[random.Random], Case], int]] = [
    (_random_bytes, 15),
    (_empty, 2),
    (_bad_utf8, 8),
    (_surrogate, 2),
    (_deep, 3),
    (_huge, 4),
    (_bad_batch_id, 20),
    (_unknown_provider, 10),
    (_url_provider, 6),
    (_unknown_account, 6),
    (_wrong_types, 12),
    (_json_oddities, 12),
]


def hostile_headers(rng: random.Random) -> list[tuple[str, bytes]]:
    """Forged or broken trace context and CloudEvents/DLQ headers, invalid UTF-8, oversized values."""
    choices = [
        ("traceparent", b"00-" + b"0" * 32 + b"-" + b"0" * 16 + b"-01"),
        ("traceparent", rng.randbytes(rng.randint(0, 80))),
        ("traceparent", f"00-{rng.getrandbits(128):032x}-{rng.getrandbits(64):016x}-01".encode()),
        ("traceparent", b"ff-" + b"f" * 32 + b"-" + b"f" * 16 + b"-ff"),
        ("traceparent", b"00-" + b"a" * 10_000),
        ("tracestate", b"x=" + b"y" * 5_000),
        ("baggage", b"k=" + rng.randbytes(100)),
        ("ce_id", rng.randbytes(20)),
        ("bcw.dlq.reason", b"forged"),
        ("\u202eweird\u0000", b"\xff\xfe"),
        ("", b""),
        ("authorization", b"Bearer not-a-real-key"),
    ]
    return rng.sample(choices, rng.randint(0, 4))


API_PATH = re.compile(
    "^(" + "|".join(re.escape(p) for p in PREFIXES) + r")([A-Za-z0-9][A-Za-z0-9._:-]{0,255})(/cancel)?$"
)


async def test_6_poison_and_hostile_input(private_stack: PrivateStack, record_row: RecordRow) -> None:
    started = time.monotonic()
    rng = random.Random(SEED)
    s = private_stack(3)
    worker = s.start_worker(name="s6-worker")
    valid: dict[str, tuple[str, str]] = {}  # command_id -> (provider, batch_id)
    tag = uuid.uuid4().hex[:6]
    for dialect, n in (("openai", 50), ("siliconflow", 50), ("dashscope", 50), ("deepinfra", 30)):
        for b in s.emulator.create_batches(dialect, n, prefix=f"rel6_{tag}_"):
            valid[f"rel6-ok-{uuid.UUID(int=rng.getrandbits(128))}"] = (dialect, b)
    for b in ODD_VALID_IDS:
        valid[f"rel6-odd-{uuid.UUID(int=rng.getrandbits(128))}"] = (rng.choice(CONFIGURED), b)
    weights = [w for _, w in GENERATORS]
    cases = [rng.choices([g for g, _ in GENERATORS], weights)[0](rng) for _ in range(INVALID)]
    records: list[tuple[str | None, bytes | None, bytes | None, list[tuple[str, bytes]]]] = []
    for i, case in enumerate(cases):
        key = rng.choice([None, b"openai/default/x", rng.randbytes(8)])
        if case.value is None:
            key = key or b"tombstone"  # Kafka takes a null value only with a key
        records.append((None, case.value, key, [*hostile_headers(rng), ("rel-case", str(i).encode())]))
    for cid, (provider, b) in valid.items():
        body = json.dumps({"command_id": cid, "provider": provider, "batch_id": b}).encode()
        records.append((cid, body, f"{provider}/default/{b}".encode(), hostile_headers(rng)))
    rng.shuffle(records)
    answered = [c.command_id for c in cases if c.command_id is not None]

    async with EventLog(s.bootstrap, s.events) as events, EventLog(s.bootstrap, s.dlq) as dlq:
        await publish(s.bootstrap, s.commands, records)
        await wait_for(lambda: len(dlq.records) >= len(cases), 240, f"{len(cases)} dead letters", dlq)
        await wait_for(finished(events, [*valid, *answered]), 240, "every final event", events)
        committed = await wait_committed(s, 60.0, fail=False)
        row = conclude(
            "6 poison + hostile input",
            s,
            events,
            [*valid, *answered],
            started,
            committed=committed,
            dlq=dlq,
            dead_letters=[c.value for c in cases],
            notes=f"seed {SEED}, {len(valid)} valid",
        )
        await dlq.poll()
    record_row(row)
    assert not row.violations(), row.violations()
    assert len(dlq.records) == len(cases), "a valid command was dead-lettered, or an invalid one twice"
    by_case = {p.headers["rel-case"]: p for p in dlq.records}
    wrong = []
    for i, case in enumerate(cases):
        p = by_case[str(i).encode()]
        reason = p.headers["bcw.dlq.reason"].decode()
        if (p.raw or b"") != (case.value or b"") or reason not in case.reasons:
            wrong.append((i, reason, sorted(case.reasons), (case.value or b"")[:60]))
    assert not wrong, f"{len(wrong)} dead letters with wrong bytes or reason, e.g. {wrong[:5]}"
    for cid in answered:
        (final,) = events.finals(cid)
        assert final["outcome"] == "invalid", final
    for cid, (_, b) in valid.items():
        (final,) = events.finals(cid)
        assert final["outcome"] == ("rejected" if b in ODD_VALID_IDS else "cancelled"), (b, final)
    # The emulator never saw a path outside /{prefix}/batches/{valid id}[/cancel], nor an id of an invalid command.
    allowed = {b for _, b in valid.values()}
    outside = []
    for r in s.emulator.requests():
        m = API_PATH.fullmatch(unquote(r["path"]))
        if not m or m.group(2) not in allowed or r["method"] != ("POST" if m.group(3) else "GET") or r["query"]:
            outside.append((r["method"], r["path"]))
    assert not outside, f"requests outside the allowed paths: {outside[:10]}"
    assert not alive([worker]), worker.log_tail()
