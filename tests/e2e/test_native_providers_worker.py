"""The worker process end to end for Anthropic, Mistral, Azure, Together and xAI: broker, worker, emulator."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from batch_cancel_emulator.testing import Emulator
from devstack.broker import KafkaBroker
from tests.support.events import EventLog, publish_commands
from tests.support.stack import NATIVE, WRONG_KEY, Stack


@pytest.fixture(scope="module")
def stack(kafka: KafkaBroker, emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(kafka, emulator, tmp_path_factory.mktemp("native"), dialects=NATIVE)
    s.start_worker()
    yield s
    s.close()


def bid() -> str:
    return f"batch_{uuid.uuid4().hex[:12]}"


async def _final(stack: Stack, provider: str, batch: str, account: str = "default") -> dict[str, object]:
    async with EventLog(stack.bootstrap, stack.events) as log:
        command = {"provider": provider, "account": account, "batch_id": batch}
        (cid,) = await publish_commands(stack.bootstrap, stack.commands, [command])
        await log.wait_finals([cid], timeout=60)
        (final,) = log.finals(cid)
        states = [p.value["status"] for p in log.by_command[cid]]
    return final | {"_states": states}


@pytest.mark.parametrize("provider", NATIVE)
async def test_cancelled(stack: Stack, provider: str) -> None:
    batch = stack.emulator.create_batch(provider, bid(), cancelling_polls=2)
    final = await _final(stack, provider, batch)
    assert final["outcome"] == "cancelled" and final["already_terminal"] is False
    assert final["_states"] == ["cancelling", "cancelled"]
    assert final["provider_status"]  # the raw value, e.g. Anthropic's "ended"
    assert [r["method"] for r in stack.emulator.requests(batch_id=batch)].count("POST") == 1


@pytest.mark.parametrize("provider", NATIVE)
async def test_already_finished(stack: Stack, provider: str) -> None:
    batch = stack.emulator.create_batch(provider, bid(), status="completed")
    final = await _final(stack, provider, batch)
    assert final["outcome"] == "completed" and final["already_terminal"] is True


@pytest.mark.parametrize("provider", NATIVE)
async def test_rejected_401_and_404(stack: Stack, provider: str) -> None:
    batch = stack.emulator.create_batch(provider, bid())
    final = await _final(stack, provider, batch, account="wrongkey")
    assert final["outcome"] == "rejected" and final["detail"]["http_status"] == 401  # type: ignore[index]
    assert len(stack.emulator.requests(batch_id=batch)) == 1
    final = await _final(stack, provider, bid())
    assert final["outcome"] == "rejected" and final["detail"]["http_status"] == 404  # type: ignore[index]


@pytest.mark.parametrize("provider", NATIVE)
async def test_overload_then_rate_limit_are_retried(stack: Stack, provider: str) -> None:
    faults = [{"kind": "overload", "count": 2}, {"kind": "rate_limit", "retry_after_s": 1}]
    batch = stack.emulator.create_batch(provider, bid(), faults=faults)
    final = await _final(stack, provider, batch)
    assert final["outcome"] == "cancelled"
    cancels = [r for r in stack.emulator.requests(batch_id=batch) if r["method"] == "POST"]
    overload = 529 if provider == "anthropic" else 503
    assert [r["status"] for r in cancels] == [overload, overload, 429, 200]
    assert cancels[3]["t_mono"] - cancels[2]["t_mono"] >= 0.95  # Retry-After: 1 was honoured


async def test_anthropic_spend_limit_is_rejected_without_retry(stack: Stack) -> None:
    batch = stack.emulator.create_batch("anthropic", bid(), faults=[{"kind": "quota", "count": 3}])
    final = await _final(stack, "anthropic", batch)
    assert final["outcome"] == "rejected" and final["detail"]["code"] == "enforced_spend_limit_reached"  # type: ignore[index]
    assert len(stack.emulator.requests(batch_id=batch)) == 1


async def test_new_key_headers_never_reach_any_output(
    kafka: KafkaBroker, emulator: Emulator, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Anthropic's ``x-api-key`` and Azure's ``api-key`` are secrets like a bearer token (see test_secrets.py)."""
    good = "sk-SECRET-native-canary-3e9a1f"
    s = Stack(kafka, emulator, tmp_path_factory.mktemp("native-secrets"), partitions=1, dialects=NATIVE)
    try:
        for dialect in ("anthropic", "azure"):
            emulator.add_key(dialect, good)
        worker = s.start_worker(name="native-secrets", E2E_KEY=good, BCW_LOG_LEVEL="DEBUG")
        commands = []
        for dialect in ("anthropic", "azure"):
            ok = emulator.create_batch(dialect, bid(), faults=[{"kind": "rate_limit", "retry_after_s": 0}])
            commands += [
                {"provider": dialect, "batch_id": ok},
                {"provider": dialect, "account": "wrongkey", "batch_id": emulator.create_batch(dialect, bid())},
            ]
        async with EventLog(s.bootstrap, s.events) as events:
            ids = await publish_commands(s.bootstrap, s.commands, commands)
            await events.wait_finals(ids, timeout=60)
            outcomes = sorted(events.finals(i)[0]["outcome"] for i in ids)
            published = b"".join((p.raw or b"") + repr(p.headers).encode() for p in events.records)
        assert outcomes == ["cancelled", "cancelled", "rejected", "rejected"]
        outputs = {
            "events": published,
            "metrics": worker.get("/metrics")[1].encode(),
            "log": worker.log_text().encode(),
            "emulator request log": repr(emulator.requests()).encode(),
        }
        assert b"command finished" in outputs["log"]
        for channel, text in outputs.items():
            assert good.encode() not in text, f"the key leaked into {channel}"
            assert WRONG_KEY.encode() not in text, f"the wrong key leaked into {channel}"
    finally:
        s.close()
