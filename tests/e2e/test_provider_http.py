"""The provider clients against the emulator over real HTTP on loopback: retries, refusals, parsing."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from batch_cancel_emulator.testing import DEFAULT_KEY, Emulator, key_id
from worker.config import ProvidersFile
from worker.contract import BatchStatus
from worker.errors import GaveUp, Rejected
from worker.providers import ProviderClient, build_clients
from worker.retry import RetryPolicy

DIALECTS = ["openai", "siliconflow", "dashscope", "deepinfra"]
NATIVE = ["anthropic", "mistral", "azure", "together", "xai"]
#: Short waits so the suite is quick, but real ones: Retry-After must still be honoured over HTTP.
FAST = RetryPolicy(wait_min_s=0.01, wait_first_s=0.05, wait_max_s=0.2, budget_s=10.0)


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator() as emu:
        yield emu


MakeClient = Callable[..., ProviderClient]


@pytest.fixture
async def make_client(emulator: Emulator, tmp_path: Path) -> AsyncIterator[MakeClient]:
    made: list[ProviderClient] = []

    def make(dialect: str, *, key: str = DEFAULT_KEY, **overrides: Any) -> ProviderClient:
        key_file = tmp_path / f"key-{len(made)}"
        key_file.write_text(key)
        config = {
            "dialect": dialect,
            "base_url": emulator.base_url(dialect),
            "max_requests_per_s": 100_000,
            **overrides,
        }
        config["accounts"] = {"default": {"api_key_file": str(key_file)}}
        providers = ProvidersFile.model_validate({"providers": {"p": config}})
        client = build_clients(providers, policy=FAST)["p"]
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()


def _calls(emulator: Emulator, batch_id: str) -> list[tuple[str, str, int]]:
    return [(r["method"], r["op"], r["status"]) for r in emulator.requests(batch_id=batch_id)]


async def test_overload_three_times_then_success_is_four_cancels(emulator: Emulator, make_client: MakeClient) -> None:
    batch = emulator.create_batch("siliconflow", faults=[{"kind": "overload", "count": 3}])
    result = await make_client("siliconflow").cancel("default", batch)
    assert result.snapshot.status is BatchStatus.CANCELLING and not result.already_terminal
    assert _calls(emulator, batch) == [("POST", "cancel", 503)] * 3 + [("POST", "cancel", 200)]


async def test_wrong_key_is_one_call_and_rejected(emulator: Emulator, make_client: MakeClient) -> None:
    batch = emulator.create_batch("siliconflow")
    with pytest.raises(Rejected) as info:
        await make_client("siliconflow", key="sk-wrong").cancel("default", batch)
    assert info.value.http_status == 401 and info.value.message == "Invalid token"
    assert len(_calls(emulator, batch)) == 1
    secrets = [r["headers"].get("authorization") for r in emulator.requests(batch_id=batch)]
    assert secrets == ["[redacted]"]


@pytest.mark.parametrize(("dialect", "refusal"), [("openai", 409), ("siliconflow", 400), ("dashscope", 400)])
async def test_cancel_of_a_finished_batch_reads_it_once(
    emulator: Emulator, make_client: MakeClient, dialect: str, refusal: int
) -> None:
    batch = emulator.create_batch(dialect, status="completed")
    result = await make_client(dialect).cancel("default", batch)
    assert result.already_terminal and result.snapshot.status is BatchStatus.COMPLETED
    assert result.snapshot.completed_at is not None
    assert _calls(emulator, batch) == [("POST", "cancel", refusal), ("GET", "retrieve", 200)]


@pytest.mark.parametrize(
    ("fault", "expected_gap"),
    [
        ({"retry_after_s": 1}, 1.0),
        ({"retry_after_ms": 400}, 0.4),
        ({"retry_after_s": 1, "retry_after_date": True}, 0.0),
    ],
)
async def test_retry_after_is_honoured(
    emulator: Emulator, make_client: MakeClient, fault: dict[str, Any], expected_gap: float
) -> None:
    batch = emulator.create_batch("openai", faults=[{"kind": "rate_limit", **fault}])
    await make_client("openai").cancel("default", batch)
    first, second = emulator.requests(batch_id=batch)
    assert (first["status"], second["status"]) == (429, 200)
    gap = second["t_mono"] - first["t_mono"]
    # An HTTP date has one-second resolution, so it may mean anything from 0 to 1 s from now.
    assert expected_gap - 0.05 <= gap <= max(expected_gap, 1.0) + 1.0


@pytest.mark.parametrize("fault_on", ["cancel", "retrieve"])
async def test_connection_dropped_mid_body_is_retried(
    emulator: Emulator, make_client: MakeClient, fault_on: str
) -> None:
    # The dropped answer still took effect (a poll was used up), as a real lost response would have.
    batch = emulator.create_batch("deepinfra", faults=[{"kind": "drop"}], fault_on=fault_on, cancelling_polls=5)
    client = make_client("deepinfra")
    assert (await client.cancel("default", batch)).snapshot.status is BatchStatus.CANCELLING
    assert (await client.retrieve("default", batch)).status is BatchStatus.CANCELLING
    requests = emulator.requests(batch_id=batch)
    assert [r["dropped"] for r in requests].count(True) == 1 and len(requests) == 3


async def test_read_timeout_is_retried(emulator: Emulator, make_client: MakeClient) -> None:
    batch = emulator.create_batch("openai", faults=[{"kind": "slow", "delay_s": 1.5}], fault_on="retrieve")
    snapshot = await make_client("openai", read_timeout_s=0.3).retrieve("default", batch)
    assert snapshot.status is BatchStatus.IN_PROGRESS
    assert len(emulator.requests(batch_id=batch)) == 2


async def test_server_errors_until_budget_runs_out_is_gave_up(emulator: Emulator, make_client: MakeClient) -> None:
    batch = emulator.create_batch("dashscope", faults=[{"kind": "server_error", "status": 502, "count": 1000}])
    with pytest.raises(GaveUp) as info:
        await make_client("dashscope", retry_budget_s=0.5).cancel("default", batch)
    assert "502" in info.value.cause and info.value.attempts == len(emulator.requests(batch_id=batch)) > 1


@pytest.mark.parametrize("dialect", DIALECTS + NATIVE)
async def test_unknown_batch_is_rejected_404(emulator: Emulator, make_client: MakeClient, dialect: str) -> None:
    with pytest.raises(Rejected) as info:
        await make_client(dialect).retrieve("default", "batch_does_not_exist")
    assert info.value.http_status == 404
    assert len(emulator.requests(batch_id="batch_does_not_exist", dialect=dialect)) == 1


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_each_dialect_parses_its_real_answers(emulator: Emulator, make_client: MakeClient, dialect: str) -> None:
    batch = emulator.create_batch(dialect, cancelling_polls=1)
    client = make_client(dialect)
    cancel = await client.cancel("default", batch)
    assert cancel.snapshot.status is BatchStatus.CANCELLING and cancel.snapshot.cancelling_at is not None
    assert cancel.snapshot.cancelled_at is None and cancel.snapshot.in_progress_at is None  # 0 / null → None
    assert (await client.retrieve("default", batch)).status is BatchStatus.CANCELLING
    final = await client.retrieve("default", batch)
    assert final.terminal and final.status is BatchStatus.CANCELLED and final.cancelled_at is not None
    assert final.provider_status == "cancelled"
    if dialect == "deepinfra":
        assert final.model and final.usage and final.usage["total_tokens"] == 200
    if dialect == "siliconflow":
        assert final.request_counts is None and final.errors == []


async def test_siliconflow_starts_in_queue(emulator: Emulator, make_client: MakeClient) -> None:
    batch = emulator.create_batch("siliconflow")
    snapshot = await make_client("siliconflow").retrieve("default", batch)
    assert (snapshot.status, snapshot.provider_status) == (BatchStatus.QUEUED, "in_queue")


async def test_per_account_concurrency_is_bounded(emulator: Emulator, make_client: MakeClient) -> None:
    key = "sk-bounded-account"
    emulator.add_key("openai", key)
    batches = emulator.create_batches("openai", 40, prefix="batch_bound_", delay_s=0.05)
    client = make_client("openai", key=key, max_concurrency=4)
    await asyncio.gather(*(client.retrieve("default", b) for b in batches))
    stats = emulator.stats()
    assert stats["max_in_flight"][f"key:openai:{key_id(key)}"] == 4
    assert stats["count"][f"key:openai:{key_id(key)}"] == 40


@pytest.mark.parametrize("dialect", NATIVE)
@pytest.mark.parametrize("cancelling_shown", [True, False])
async def test_new_dialects_cancel_and_follow_to_cancelled(
    emulator: Emulator, make_client: MakeClient, dialect: str, cancelling_shown: bool
) -> None:
    batch = emulator.create_batch(dialect, cancelling_polls=1, cancelling_shown=cancelling_shown)
    client = make_client(dialect)
    cancel = await client.cancel("default", batch)
    # Hidden cancelling (Together's current SDK has no CANCELING): the batch still looks in progress.
    expected = BatchStatus.CANCELLING if cancelling_shown else BatchStatus.IN_PROGRESS
    assert cancel.snapshot.status is expected and not cancel.already_terminal
    assert (await client.retrieve("default", batch)).status is expected
    final = await client.retrieve("default", batch)
    assert final.status is BatchStatus.CANCELLED and final.terminal
    assert final.provider_status  # the raw value (xAI: its counters), never empty
    assert _calls(emulator, batch) == [("POST", "cancel", 200), ("GET", "retrieve", 200), ("GET", "retrieve", 200)]


@pytest.mark.parametrize("dialect", NATIVE)
@pytest.mark.parametrize("final", ["completed", "failed", "expired"])
async def test_new_dialects_report_how_a_batch_ended(
    emulator: Emulator, make_client: MakeClient, dialect: str, final: str
) -> None:
    """The emulator ends the batch as ``final``; each dialect derives its outcome its own way."""
    batch = emulator.create_batch(dialect, status=final)
    snapshot = await make_client(dialect).retrieve("default", batch)
    # Anthropic and xAI have no failed batch: every request errored, so the batch completed (see the dialects).
    expected = "completed" if final == "failed" and dialect in ("anthropic", "xai") else final
    # xAI documents no expiry: the emulator ends unfinished requests as errored.
    expected = "completed" if final == "expired" and dialect == "xai" else expected
    assert snapshot.status == expected and snapshot.terminal


@pytest.mark.parametrize("dialect", NATIVE)
@pytest.mark.parametrize("finished_answer", ["error", "batch"])
async def test_new_dialects_cancel_of_a_finished_batch(
    emulator: Emulator, make_client: MakeClient, dialect: str, finished_answer: str
) -> None:
    """What a refused cancel looks like is undocumented for these: either answer ends as already terminal."""
    batch = emulator.create_batch(dialect, status="completed", finished_answer=finished_answer)
    result = await make_client(dialect).cancel("default", batch)
    assert result.already_terminal and result.snapshot.status is BatchStatus.COMPLETED
    if finished_answer == "batch":
        assert _calls(emulator, batch) == [("POST", "cancel", 200)]
    else:
        refusal = 409 if dialect == "azure" else 400
        assert _calls(emulator, batch) == [("POST", "cancel", refusal), ("GET", "retrieve", 200)]


@pytest.mark.parametrize("dialect", NATIVE)
async def test_new_dialects_wrong_key_is_one_call(emulator: Emulator, make_client: MakeClient, dialect: str) -> None:
    batch = emulator.create_batch(dialect)
    with pytest.raises(Rejected) as info:
        await make_client(dialect, key="sk-wrong").cancel("default", batch)
    assert info.value.http_status == 401 and len(_calls(emulator, batch)) == 1
    for request in emulator.requests(batch_id=batch):
        assert "sk-wrong" not in str(request)  # the key headers are redacted in the emulator's own log


async def test_anthropic_overload_529_and_rate_limit_are_retried(emulator: Emulator, make_client: MakeClient) -> None:
    faults = [{"kind": "overload", "count": 2}, {"kind": "rate_limit", "retry_after_s": 1}]
    batch = emulator.create_batch("anthropic", faults=faults)
    result = await make_client("anthropic").cancel("default", batch)
    assert result.snapshot.status is BatchStatus.CANCELLING
    requests = emulator.requests(batch_id=batch)
    assert [r["status"] for r in requests] == [529, 529, 429, 200]
    assert requests[3]["t_mono"] - requests[2]["t_mono"] >= 0.95  # Retry-After: 1 was honoured
    assert requests[0]["headers"]["anthropic-version"] == "2023-06-01"
    assert requests[0]["headers"]["x-api-key"] == "[redacted]"


async def test_anthropic_spend_limit_is_not_retried(emulator: Emulator, make_client: MakeClient) -> None:
    batch = emulator.create_batch("anthropic", faults=[{"kind": "quota", "count": 5}])
    with pytest.raises(Rejected) as info:
        await make_client("anthropic").cancel("default", batch)
    assert info.value.http_status == 429 and info.value.code == "enforced_spend_limit_reached"
    assert len(_calls(emulator, batch)) == 1


async def test_azure_classic_api_sends_its_version(emulator: Emulator, make_client: MakeClient) -> None:
    batch = emulator.create_batch("azure", doc_example_shape=True, cancelling_polls=0)
    client = make_client("azure", base_url=emulator.azure_classic_base_url(), api_version="2024-10-21")
    cancel = await client.cancel("default", batch)
    assert (cancel.snapshot.status, cancel.snapshot.provider_status) == (BatchStatus.CANCELLING, "Cancelling")
    assert cancel.snapshot.created_at is not None  # an ISO string in Microsoft's examples
    final = await client.retrieve("default", batch)
    assert final.status is BatchStatus.CANCELLED
    requests = emulator.requests(batch_id=batch)
    assert {r["query"] for r in requests} == {"api-version=2024-10-21"}
    assert all(r["path"].startswith("/azure/openai/batches/") for r in requests)


def _readme_providers() -> dict[str, Any]:
    """Every ``providers:`` YAML block of the README, merged: the examples an operator copies."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    merged: dict[str, Any] = {}
    for block in re.findall(r"```yaml\n(providers:\n.*?)```", text, re.DOTALL):
        merged |= yaml.safe_load(block)["providers"]
    return merged


def test_readme_provider_examples_are_valid_configuration() -> None:
    providers = _readme_providers()
    assert {"openai", "groq", "anthropic", "azure"} <= set(providers)
    ProvidersFile.model_validate({"providers": providers})


async def test_readme_groq_example_works_by_configuration_alone(emulator: Emulator, make_client: MakeClient) -> None:
    """Groq is OpenAI-shaped: the README's entry, with only its host swapped for the emulator's, cancels."""
    groq = _readme_providers()["groq"]
    assert groq["dialect"] == "openai" and groq["base_url"] == "https://api.groq.com/openai/v1"
    path = groq["base_url"].removeprefix("https://api.groq.com")  # /openai/v1: the emulator's OpenAI dialect
    batch = emulator.create_batch("openai", cancelling_polls=0)
    client = make_client("openai", base_url=emulator.url + path)
    assert (await client.cancel("default", batch)).snapshot.status is BatchStatus.CANCELLING
    assert (await client.retrieve("default", batch)).status is BatchStatus.CANCELLED


def test_emulator_only_ever_saw_valid_batch_paths(emulator: Emulator) -> None:
    """Runs last in this module: every provider request any test sent had a well-formed batch path."""
    requests = emulator.requests()
    assert requests
    assert all(r["op"] in ("cancel", "retrieve") and r["batch_id"] for r in requests), [
        r["path"] for r in requests if not r["op"]
    ]


def test_a_scenario_is_a_typed_object_or_keywords_checked_before_the_request(emulator: Emulator) -> None:
    """``Scenario`` and ``Fault`` come from ``testing``; a misspelt keyword fails in the test, not as a 422."""
    from pydantic import ValidationError

    from batch_cancel_emulator.testing import Fault, Scenario

    typed = emulator.create_batch("openai", scenario=Scenario(status="completed", faults=[Fault(kind="overload")]))
    assert emulator.batch("openai", typed)["status"] == "completed"
    [bulk] = emulator.create_batches("openai", 1, scenario=Scenario(status="completed"))
    assert emulator.batch("openai", bulk)["status"] == "completed"
    before = len(emulator.requests())
    with pytest.raises(ValidationError, match="statuss"):
        emulator.create_batch("openai", statuss="completed")
    with pytest.raises(TypeError, match="not both"):
        emulator.create_batch("openai", scenario=Scenario(), status="completed")
    assert len(emulator.requests()) == before
