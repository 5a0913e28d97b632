"""Selectors and lifts at intake: refused like any command (unknown account, missing signature), else handed
to ``Selectors`` without joining any follow."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from tests.support.fakes import FakeProvider, MakeDispatcher, Rec, Sink, submit_all
from tests.support.waiting import until
from worker.contract import DeadLetterReason, LiftCommand, SelectorCommand
from worker.signing import SignatureVerifier, sign

KEY = b"selector-signing-key"


class Taker:
    def __init__(self) -> None:
        self.taken: list[SelectorCommand | LiftCommand] = []

    def check(self, command: SelectorCommand | LiftCommand) -> None:
        return None

    def take(self, record: Any, offsets: Any, command: SelectorCommand | LiftCommand, context: Any) -> None:
        self.taken.append(command)


def _selector(account: str = "default", **extra: Any) -> bytes:
    body = {
        "kind": "cancel_matching",
        "command_id": "kill-1",
        "provider": "p",
        "account": account,
        "reason": "r",
        "requested_by": "t",
        "requested_at": datetime.now(UTC).isoformat(),  # now, not at import: signed commands must be recent
        **extra,
    }
    return json.dumps(body).encode()


async def test_a_selector_is_handed_over_and_joins_no_follow(make_dispatcher: MakeDispatcher) -> None:
    taker, sink = Taker(), Sink()
    d = make_dispatcher(FakeProvider(polls=["cancelled"]), sink, selectors=taker)
    submit_all(d, [Rec(_selector(), offset=0)])
    assert [c.command_id for c in taker.taken] == ["kill-1"] and d.follows.following == 0 and sink.dead == []


async def test_a_selector_for_an_unknown_account_is_dead_lettered(make_dispatcher: MakeDispatcher) -> None:
    taker, sink = Taker(), Sink()
    d = make_dispatcher(FakeProvider(polls=["cancelled"]), sink, selectors=taker)
    submit_all(d, [Rec(_selector(account="nobody"), offset=0)])
    await until(lambda: bool(sink.dead), what="dead letter")
    assert sink.dead[0][1] is DeadLetterReason.UNKNOWN_ACCOUNT and taker.taken == []
    assert sink.events[-1].outcome == "invalid" and sink.events[-1].batch_id is None


async def test_an_account_that_requires_signatures_requires_them_of_selectors(make_dispatcher: MakeDispatcher) -> None:
    taker, sink = Taker(), Sink()
    verifier = SignatureVerifier({("p", "default"): [KEY]}, max_age_s=300)
    d = make_dispatcher(FakeProvider(polls=["cancelled"]), sink, selectors=taker, verifier=verifier)
    unsigned = Rec(_selector(), offset=0)
    value = _selector(command_id="kill-2")
    signed = Rec(value, offset=1, headers=[sign(value, KEY)])
    submit_all(d, [unsigned, signed])
    await until(lambda: bool(sink.dead), what="dead letter")
    assert sink.dead[0][1] is DeadLetterReason.UNAUTHORIZED and "requires signed commands" in sink.dead[0][2]
    assert [c.command_id for c in taker.taken] == ["kill-2"]
