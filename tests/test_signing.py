"""Signed commands: the HMAC scheme, the replay bounds, and the dispatch hook that keeps refusals off providers.

The scheme is pinned against a value computed independently (``openssl dgst -sha256 -hmac``) so another
language's implementation can be checked against the same vector from ``schemas/README.md``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.fakes import FakeProvider, MakeDispatcher, Rec, Sink, submit_all
from tests.support.waiting import until
from worker.app import signature_verifier
from worker.config import AccountConfig, ConfigError, ProvidersFile, Settings
from worker.contract import DeadLetterReason, InvalidCommand, Outcome, decode_command
from worker.signing import HEADER, SignatureVerifier, sign, signature

KEY = b"k-SIGNING-canary-3e9f0a"
OLD_KEY = b"k-SIGNING-old-77c1d2"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def value(cid: str = "c1", *, requested_at: datetime | None = NOW, account: str = "signed", **extra: Any) -> bytes:
    body: dict[str, Any] = {"command_id": cid, "provider": "p", "account": account, "batch_id": "batch_1", **extra}
    if requested_at is not None:
        body["requested_at"] = requested_at.isoformat()
    return json.dumps(body).encode()


def verifier(**kw: Any) -> SignatureVerifier:
    return SignatureVerifier({("p", "signed"): [KEY, OLD_KEY]}, max_age_s=300, now=NOW.timestamp, **kw)


def check(v: SignatureVerifier, rec: Rec) -> None:
    assert rec.value is not None
    v.verify(rec, decode_command(rec.value, max_bytes=65536))


def test_known_vector() -> None:
    # printf '%s' '{"command_id":"c1"}' | openssl dgst -sha256 -hmac secret
    assert signature(b'{"command_id":"c1"}', b"secret") == (
        "v1=c9f042023fa4024c36d373d91ba4c585f4533b7ac8a7d848c66078f66e6acb8f"
    )
    name, header = sign(b"x", b"k")
    assert name == HEADER == "bcw-signature"
    assert header.startswith(b"v1=") and len(header) == 3 + 64


def test_good_signature_with_any_listed_key_passes() -> None:
    v = verifier()
    for i, key in enumerate((KEY, OLD_KEY)):
        raw = value(f"c{i}")
        check(v, Rec(raw, offset=i, headers=[sign(raw, key)]))
        # Accepted, not skipped: the verifier remembers it, so the same command elsewhere is a replay.
        with pytest.raises(InvalidCommand, match="replay"):
            check(v, Rec(raw, offset=100 + i, headers=[sign(raw, key)]))


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ([], "no bcw-signature header"),
        ([sign(b"other bytes", KEY)], "does not match"),
        ([(HEADER, b"v1=" + b"0" * 64)], "does not match"),
        ([(HEADER, b"garbage")], "does not match"),
        ([(HEADER, None)], "no bcw-signature header"),  # Kafka header values may be null
    ],
)
def test_unsigned_or_badly_signed_is_unauthorized(headers: list[tuple[str, bytes | None]], message: str) -> None:
    with pytest.raises(InvalidCommand, match=message) as err:
        check(verifier(), Rec(value(), headers=headers))  # type: ignore[arg-type]  # null values: see above
    assert err.value.reason == DeadLetterReason.UNAUTHORIZED
    assert err.value.command_id == "c1"  # answered with a final `invalid` event


def test_signature_covers_every_byte() -> None:
    raw = value()
    tampered = raw.replace(b"batch_1", b"batch_2")
    with pytest.raises(InvalidCommand, match="does not match"):
        check(verifier(), Rec(tampered, headers=[sign(raw, KEY)]))


@pytest.mark.parametrize(
    ("requested_at", "message"),
    [
        (None, "must carry requested_at"),
        (NOW - timedelta(seconds=301), "accepted within 300s"),
        (NOW + timedelta(seconds=301), "accepted within 300s"),
    ],
)
def test_replay_window(requested_at: datetime | None, message: str) -> None:
    raw = value(requested_at=requested_at)
    with pytest.raises(InvalidCommand, match=message):
        check(verifier(), Rec(raw, headers=[sign(raw, KEY)]))


def test_same_command_id_elsewhere_is_a_replay_but_a_redelivery_is_not() -> None:
    v = verifier(seen_limit=2)
    raw = value("c1")
    rec = Rec(raw, offset=5, headers=[sign(raw, KEY)])
    check(v, rec)
    check(v, rec)  # the same record again: a rebalance or restart redelivered it
    with pytest.raises(InvalidCommand, match="replay") as err:
        check(v, Rec(raw, offset=9, headers=[sign(raw, KEY)]))
    assert err.value.command_id is None  # no second final event for the original command
    for i in range(3):  # the memory is bounded: old ids are forgotten
        other = value(f"x{i}")
        check(v, Rec(other, offset=100 + i, headers=[sign(other, KEY)]))
    check(v, Rec(raw, offset=9, headers=[sign(raw, KEY)]))


def test_accounts_without_keys_are_untouched() -> None:
    v = verifier()
    assert v.accounts == {("p", "signed")}
    raw = value(account="default", requested_at=None)
    check(v, Rec(raw))
    check(v, Rec(raw, offset=1, headers=[(HEADER, b"garbage")]))  # nor is a header checked, or a replay
    with pytest.raises(InvalidCommand, match="no bcw-signature header"):
        check(v, Rec(value(requested_at=None)))  # the same command for the signed account is refused


async def test_dispatch_dead_letters_unsigned_command_and_never_calls_the_provider(
    make_dispatcher: MakeDispatcher,
) -> None:
    provider, sink = FakeProvider(), Sink()
    verifier = SignatureVerifier({("p", "signed"): [KEY]}, max_age_s=300)
    d = make_dispatcher(provider, sink, accounts=frozenset({"default", "signed"}), verifier=verifier)
    now = datetime.now(UTC)
    good = value("good", requested_at=now)
    offsets = submit_all(
        d, [Rec(value("bad", requested_at=now), offset=0), Rec(good, offset=1, headers=[sign(good, KEY)])]
    )
    await until(lambda: offsets.to_commit() == 2 and any(e.final for e in sink.for_command("good")))
    [(record, reason, _)] = sink.dead
    assert record.offset == 0 and reason == DeadLetterReason.UNAUTHORIZED
    [final] = [e for e in sink.for_command("bad") if e.final]
    assert final.outcome == Outcome.INVALID and final.detail is not None and final.detail.code == "unauthorized"
    assert provider.cancels == 1  # only the signed command reached the provider
    assert next(e for e in sink.for_command("good") if e.final).outcome == Outcome.CANCELLED


def test_keys_come_from_env_or_file_and_missing_ones_fail_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = tmp_path / "keys"
    keys.write_text("key-one\n\n key-two \n")
    assert AccountConfig(api_key_env="X", signing_keys_file=keys).load_signing_keys() == [b"key-one", b"key-two"]
    monkeypatch.setenv("SIGN_A", "a")
    monkeypatch.delenv("SIGN_B", raising=False)
    assert AccountConfig(api_key_env="X", signing_keys_env=["SIGN_A"]).load_signing_keys() == [b"a"]
    with pytest.raises(ConfigError, match="SIGN_B"):
        AccountConfig(api_key_env="X", signing_keys_env=["SIGN_A", "SIGN_B"]).load_signing_keys()
    with pytest.raises(ValueError, match="at most one"):
        AccountConfig(api_key_env="X", signing_keys_env=["SIGN_A"], signing_keys_file=keys)
    providers = ProvidersFile.model_validate(
        {
            "providers": {
                "openai": {
                    "dialect": "openai",
                    "accounts": {"a": {"api_key_env": "X", "signing_keys_env": ["SIGN_A"]}, "b": {"api_key_env": "X"}},
                }
            }
        }
    )
    v = signature_verifier(providers, Settings())
    assert v is not None and v.accounts == {("openai", "a")}
