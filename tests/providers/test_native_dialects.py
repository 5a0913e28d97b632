"""Anthropic, Mistral, Azure, Together and xAI: parsing, outcome derivation and error classification.

Bodies are shaped like the providers' documented ones (API reference examples and the official SDKs' model
fields: anthropic-sdk-python, mistralai client-python, Azure's batch REST reference, Together's and xAI's batch
API docs); the end-to-end proof against the emulator and the SDKs is
in tests/e2e.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.cloud import CLOUD_BODIES
from worker import retry
from worker.config import ProvidersFile
from worker.contract import BatchStatus
from worker.errors import AlreadyTerminal, ProviderError, Rejected, Retryable
from worker.providers import DIALECTS, build_clients, dialect_for

T = "2024-08-20T18:37:24.100435Z"
T_UNIX = 1724179044
ANTHROPIC_BATCH = {
    "id": "msgbatch_013Zva2CMHLNnXjNJJKqJ2EF", "type": "message_batch", "processing_status": "in_progress",
    "request_counts": {"processing": 100, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0},
    "ended_at": None, "created_at": T, "expires_at": "2024-08-21T18:37:24.100435Z", "archived_at": None,
    "cancel_initiated_at": None, "results_url": None,
}  # fmt: skip
MISTRAL_JOB = {
    "id": "b1c2", "object": "batch", "input_files": ["f1"], "endpoint": "/v1/chat/completions", "errors": [],
    "status": "RUNNING", "created_at": 1735689600, "total_requests": 10, "completed_requests": 5,
    "succeeded_requests": 4, "failed_requests": 1, "started_at": 1735689660, "completed_at": None,
    "output_file": None, "error_file": None, "model": "mistral-small-latest", "metadata": None,
}  # fmt: skip
TOGETHER_BATCH = {
    "id": "batch-7b1", "user_id": "u1", "input_file_id": "file-1", "file_size_bytes": 1024, "status": "IN_PROGRESS",
    "job_deadline": "2025-01-02T00:00:00Z", "created_at": "2025-01-01T00:00:00Z", "endpoint": "/v1/chat/completions",
    "progress": 40.0, "model_id": "meta-llama/Llama-3.3-70B-Instruct-Turbo", "output_file_id": None,
    "error_file_id": None, "error": None, "completed_at": None,
}  # fmt: skip
XAI_BATCH = {
    "batch_id": "batch_9f2", "name": "nightly", "create_time": "2025-01-01T00:00:00Z",
    "expire_time": "2025-01-02T00:00:00Z",
    "state": {"num_requests": 10, "num_pending": 6, "num_success": 4, "num_error": 0, "num_cancelled": 0},
}  # fmt: skip
AZURE_EXAMPLE = {  # Microsoft's reference example: ISO times, capitalised status, null counts
    "cancelling_at": None, "cancelled_at": None, "completed_at": None, "completion_window": "24h",
    "created_at": "2024-07-19T17:13:57.2491382+00:00", "error_file_id": None, "expired_at": None,
    "expires_at": "2024-07-20T17:13:57.1918498+00:00", "failed_at": None, "finalizing_at": None, "id": "batch_abc",
    "in_progress_at": None, "input_file_id": "file-abc", "errors": None, "metadata": None, "object": "batch",
    "output_file_id": None, "request_counts": {"total": None, "completed": None, "failed": None},
    "status": "Validating", "endpoint": "/chat/completions",
}  # fmt: skip


@pytest.fixture(autouse=True)
def _fast_retries() -> Any:
    with retry.testing(attempts=3):
        yield


def _counts(**counts: int) -> dict[str, int]:
    return {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0} | counts


@pytest.mark.parametrize(
    ("processing_status", "counts", "cancel_initiated", "expected"),
    [
        ("in_progress", _counts(processing=100), None, BatchStatus.IN_PROGRESS),
        ("canceling", _counts(processing=100), T, BatchStatus.CANCELLING),
        ("ended", _counts(succeeded=40, canceled=60), T, BatchStatus.CANCELLED),
        ("ended", _counts(succeeded=40, canceled=50, expired=10), T, BatchStatus.CANCELLED),
        ("ended", _counts(succeeded=99, errored=1), T, BatchStatus.COMPLETED),  # the cancel came too late
        ("ended", _counts(succeeded=99, errored=1), None, BatchStatus.COMPLETED),
        ("ended", _counts(errored=100), None, BatchStatus.COMPLETED),  # Anthropic has no failed batch
        ("ended", _counts(succeeded=30, expired=70), None, BatchStatus.EXPIRED),
        ("archived", _counts(), None, BatchStatus.UNKNOWN),  # not a documented value: followed, kept visible
    ],
)
def test_anthropic_outcome_comes_from_the_counts(
    processing_status: str, counts: dict[str, int], cancel_initiated: str | None, expected: BatchStatus
) -> None:
    ended = processing_status == "ended"
    body = ANTHROPIC_BATCH | {
        "processing_status": processing_status,
        "request_counts": counts,
        "cancel_initiated_at": cancel_initiated,
        "ended_at": T if ended else None,
    }
    snap = dialect_for("anthropic").parse_batch(body)
    assert (snap.status, snap.provider_status) == (expected, processing_status)
    assert snap.terminal == (ended and expected is not BatchStatus.UNKNOWN)
    assert snap.created_at == T_UNIX and snap.cancelling_at == (T_UNIX if cancel_initiated else None)
    if ended:
        assert getattr(snap, f"{expected.value}_at") == T_UNIX
    assert snap.request_counts is not None and snap.request_counts.total == sum(counts.values())
    assert (snap.request_counts.completed, snap.request_counts.failed) == (counts["succeeded"], counts["errored"])


def test_an_ended_batch_without_counts_is_not_guessed() -> None:
    body = ANTHROPIC_BATCH | {"processing_status": "ended", "request_counts": None}
    snap = dialect_for("anthropic").parse_batch(body)
    assert snap.status is BatchStatus.UNKNOWN and not snap.terminal


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("QUEUED", BatchStatus.QUEUED),
        ("RUNNING", BatchStatus.IN_PROGRESS),
        ("CANCELLATION_REQUESTED", BatchStatus.CANCELLING),
        ("SUCCESS", BatchStatus.COMPLETED),
        ("FAILED", BatchStatus.FAILED),
        ("TIMEOUT_EXCEEDED", BatchStatus.EXPIRED),
        ("CANCELLED", BatchStatus.CANCELLED),
        ("PAUSED", BatchStatus.UNKNOWN),
    ],
)
def test_mistral_statuses_counts_and_times(raw: str, expected: BatchStatus) -> None:
    body = MISTRAL_JOB | {"status": raw, "completed_at": 1735693200 if expected.terminal else None}
    snap = dialect_for("mistral").parse_batch(body)
    assert (snap.status, snap.provider_status) == (expected, raw)
    assert snap.created_at == 1735689600 and snap.in_progress_at == 1735689660
    if expected.terminal:
        assert getattr(snap, f"{expected.value}_at") == 1735693200
    assert snap.request_counts is not None
    assert (snap.request_counts.total, snap.request_counts.completed, snap.request_counts.failed) == (10, 4, 1)
    assert snap.model == "mistral-small-latest"


def test_mistral_error_entries() -> None:
    snap = dialect_for("mistral").parse_batch(MISTRAL_JOB | {"errors": [{"message": "line 3: bad JSON", "count": 2}]})
    assert [e.message for e in snap.errors] == ["line 3: bad JSON"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("VALIDATING", BatchStatus.VALIDATING),
        ("IN_PROGRESS", BatchStatus.IN_PROGRESS),
        ("CANCELING", BatchStatus.CANCELLING),  # legacy SDK's word
        ("CANCELLED", BatchStatus.CANCELLED),
        ("COMPLETED", BatchStatus.COMPLETED),
        ("FAILED", BatchStatus.FAILED),
        ("EXPIRED", BatchStatus.EXPIRED),
        ("QUEUED_FOR_LATER", BatchStatus.UNKNOWN),
    ],
)
def test_together_statuses_and_iso_times(raw: str, expected: BatchStatus) -> None:
    body = TOGETHER_BATCH | {"status": raw, "completed_at": "2025-01-01T06:00:00Z" if expected.terminal else None}
    snap = dialect_for("together").parse_batch(body)
    assert (snap.status, snap.provider_status) == (expected, raw)
    assert (snap.created_at, snap.expires_at) == (1735689600, 1735776000)
    if expected.terminal:
        assert getattr(snap, f"{expected.value}_at") == 1735711200
    assert snap.request_counts is None and snap.model == TOGETHER_BATCH["model_id"]


def test_together_error_string() -> None:
    snap = dialect_for("together").parse_batch(TOGETHER_BATCH | {"status": "FAILED", "error": "input file invalid"})
    assert [e.message for e in snap.errors] == ["input file invalid"]


@pytest.mark.parametrize(
    ("state", "cancel_time", "expected"),
    [
        ({"num_requests": 10, "num_pending": 6, "num_success": 4}, None, BatchStatus.IN_PROGRESS),
        ({"num_requests": 10, "num_pending": 6, "num_success": 4}, T, BatchStatus.CANCELLING),
        ({"num_requests": 10, "num_success": 4, "num_cancelled": 6}, T, BatchStatus.CANCELLED),
        ({"num_requests": "10", "num_success": "9", "num_error": "1"}, None, BatchStatus.COMPLETED),  # int64 strings
        ({"num_requests": 10, "num_success": 10}, T, BatchStatus.COMPLETED),  # finished before the cancel
        ({}, None, BatchStatus.IN_PROGRESS),  # created empty, requests still to be added
        ({}, T, BatchStatus.CANCELLED),
    ],
)
def test_xai_status_is_derived_from_the_counters(
    state: dict[str, Any], cancel_time: str | None, expected: BatchStatus
) -> None:
    body = XAI_BATCH | {"state": state} | ({"cancel_time": cancel_time} if cancel_time else {})
    snap = dialect_for("xai").parse_batch(body)
    assert snap.status is expected
    assert snap.provider_status.startswith("num_requests=") and "num_pending=" in snap.provider_status
    assert snap.created_at == 1735689600 and snap.cancelling_at == (T_UNIX if cancel_time else None)


def test_azure_reference_example_parses() -> None:
    snap = dialect_for("azure").parse_batch(AZURE_EXAMPLE)
    assert (snap.status, snap.provider_status) == (BatchStatus.VALIDATING, "Validating")
    assert snap.created_at == 1721409237 and snap.expires_at == 1721495637
    assert snap.request_counts is not None and snap.request_counts.total is None


def test_timestamps_without_a_zone_are_not_guessed() -> None:
    snap = dialect_for("together").parse_batch(TOGETHER_BATCH | {"created_at": "2025-01-01T00:00:00"})
    assert snap.created_at is None


def _anthropic_error(type_: str, **details: str) -> dict[str, Any]:
    error: dict[str, Any] = {"type": type_, "message": "m"} | ({"details": details} if details else {})
    return {"type": "error", "error": error, "request_id": "req_1"}


H: dict[str, str] = {}
CASES: list[tuple[str, int, Any, str, type[ProviderError]]] = [
    ("anthropic", 529, _anthropic_error("overloaded_error"), "cancel", Retryable),
    ("anthropic", 429, _anthropic_error("rate_limit_error"), "retrieve", Retryable),
    ("anthropic", 429, _anthropic_error("rate_limit_error", error_code="enforced_spend_limit_reached"), "cancel",
     Rejected),
    ("anthropic", 429, _anthropic_error("rate_limit_error", error_code="contract_spend_limit_reached"), "retrieve",
     Rejected),
    ("anthropic", 429, _anthropic_error("rate_limit_error", error_code="ramp_limit_exceeded"), "cancel", Retryable),
    ("anthropic", 500, _anthropic_error("api_error"), "cancel", Retryable),
    ("anthropic", 401, _anthropic_error("authentication_error"), "cancel", Rejected),
    ("anthropic", 403, _anthropic_error("permission_error"), "cancel", Rejected),
    ("anthropic", 404, _anthropic_error("not_found_error"), "retrieve", Rejected),
    ("anthropic", 400, _anthropic_error("invalid_request_error"), "cancel", AlreadyTerminal),  # checked by a read
    ("anthropic", 400, _anthropic_error("invalid_request_error"), "retrieve", Rejected),
    ("mistral", 429, {"message": "Requests rate limit exceeded"}, "cancel", Retryable),
    ("mistral", 401, {"message": "Unauthorized", "request_id": "r"}, "cancel", Rejected),
    ("mistral", 404, {"detail": "Not Found"}, "retrieve", Rejected),
    ("mistral", 422, {"detail": [{"loc": ["path", "job_id"], "msg": "bad uuid"}]}, "cancel", Rejected),
    ("mistral", 400, {"message": "job is finished"}, "cancel", AlreadyTerminal),
    ("mistral", 503, "upstream connect error", "retrieve", Retryable),
    ("azure", 401, {"error": {"code": "401", "message": "Access denied due to invalid subscription key"}}, "cancel",
     Rejected),
    ("azure", 429, {"error": {"code": "429", "message": "Requests to the Batch API have exceeded"}}, "cancel",
     Retryable),
    ("azure", 409, {"error": {"message": "Cannot cancel a batch with status 'completed'."}}, "cancel", AlreadyTerminal),
    ("azure", 429, {"error": {"code": "insufficient_quota", "message": "quota"}}, "cancel", Rejected),
    ("together", 400, {"error": {"message": "Batch cannot be cancelled"}}, "cancel", AlreadyTerminal),
    ("together", 401, {"error": {"message": "Invalid API key provided"}}, "retrieve", Rejected),
    ("together", 429, {"error": {"message": "rate limited"}}, "retrieve", Retryable),
    ("xai", 400, {"code": "Client specified an invalid argument", "error": "bad"}, "cancel", AlreadyTerminal),
    ("xai", 400, {"code": "Client specified an invalid argument", "error": "bad"}, "retrieve", Rejected),
    ("xai", 404, {"code": "Not found", "error": "no such batch"}, "retrieve", Rejected),
    ("xai", 429, {"code": "Resource exhausted", "error": "slow down"}, "cancel", Retryable),
]  # fmt: skip


@pytest.mark.parametrize(("dialect", "status", "body", "op", "expected"), CASES)
def test_classify(dialect: str, status: int, body: Any, op: Any, expected: type[ProviderError]) -> None:
    verdict = dialect_for(dialect).classify(status, H, body, op)
    assert type(verdict) is expected, verdict
    if isinstance(verdict, Rejected):
        assert verdict.http_status == status and verdict.message


def test_anthropic_rate_limit_keeps_its_retry_after() -> None:
    body = _anthropic_error("rate_limit_error")
    verdict = dialect_for("anthropic").classify(429, {"retry-after": "7"}, body, "cancel")
    assert isinstance(verdict, Retryable) and verdict.retry_after == 7.0


# --- what goes on the wire ------------------------------------------------------------------------------------------


async def _sent(dialect: str, monkeypatch: pytest.MonkeyPatch, batch_id: str, **config: Any) -> list[httpx.Request]:
    """The requests one cancel sends (the handler answers 500, so the retries show too)."""
    monkeypatch.setenv("BCW_TEST_KEY", "sk-test-secret")
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(500, json={})

    providers = ProvidersFile.model_validate(
        {"providers": {"p": {"dialect": dialect, "accounts": {"a": {"api_key_env": "BCW_TEST_KEY"}}, **config}}}
    )
    client = build_clients(providers, transport_factory=lambda: httpx.MockTransport(handler))["p"]
    with pytest.raises(ProviderError):
        await client.cancel("a", batch_id)
    await client.aclose()
    return sent


async def test_anthropic_sends_its_key_header_and_version(monkeypatch: pytest.MonkeyPatch) -> None:
    (request, *_) = await _sent("anthropic", monkeypatch, "msgbatch_1")
    assert str(request.url) == "https://api.anthropic.com/v1/messages/batches/msgbatch_1/cancel"
    assert request.headers["x-api-key"] == "sk-test-secret" and request.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in request.headers


async def test_mistral_and_together_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    (request, *_) = await _sent("mistral", monkeypatch, "b1c2")
    assert str(request.url) == "https://api.mistral.ai/v1/batch/jobs/b1c2/cancel"
    assert request.headers["authorization"] == "Bearer sk-test-secret"
    (request, *_) = await _sent("together", monkeypatch, "batch-7b1")
    assert str(request.url) == "https://api.together.ai/v1/batches/batch-7b1/cancel"


async def test_xai_custom_method_keeps_a_colon_in_the_id_encoded(monkeypatch: pytest.MonkeyPatch) -> None:
    (request, *_) = await _sent("xai", monkeypatch, "a:b")
    assert request.url.raw_path == b"/v1/batches/a%3Ab:cancel"


async def test_azure_classic_and_v1(monkeypatch: pytest.MonkeyPatch) -> None:
    base = "https://contoso.openai.azure.com/openai"
    (request, *_) = await _sent("azure", monkeypatch, "batch_1", base_url=base, api_version="2024-10-21")
    assert str(request.url) == f"{base}/batches/batch_1/cancel?api-version=2024-10-21"
    assert request.headers["api-key"] == "sk-test-secret" and "authorization" not in request.headers
    (request, *_) = await _sent("azure", monkeypatch, "batch_1", base_url=f"{base}/v1")
    assert str(request.url) == f"{base}/v1/batches/batch_1/cancel"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"dialect": "azure"}, "needs base_url"),
        ({"dialect": "openai", "api_version": "2024-10-21"}, "azure only"),
        ({"dialect": "azure", "base_url": "https://x.openai.azure.com/openai", "api_version": "latest&x=1"}, "pattern"),
    ],
)
def test_azure_configuration_mistakes_fail_at_start(config: dict[str, Any], message: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        ProvidersFile.model_validate({"providers": {"p": {**config, "accounts": {"a": {"api_key_env": "K"}}}}})


# --- schemas/README.md's status table is what the code does ----------------------------------------------------

_README = Path(__file__).resolve().parents[2] / "schemas" / "README.md"
_LITERALS = re.compile(r"^`[^`]+`( / `[^`]+`)*$")


def _mapping_rows() -> list[tuple[str, str, str]]:
    """(dialect, raw, status) for every table row whose raw cell is plain values (not a derived condition)."""
    text = _README.read_text().split("### Status mapping, per provider", 1)[1]
    rows: list[tuple[str, str, str]] = []
    dialects = ""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not line.startswith("|") or set(cells[0]) <= {"-"} or cells[0] == "dialect":
            if rows and not line.startswith("|"):
                break
            continue
        dialects = dialects if cells[0] == "〃" else cells[0]
        raw_cell = re.sub(r"\s*\(.*\)$", "", cells[1])
        if not _LITERALS.match(raw_cell):
            continue
        raws = re.findall(r"`([^`]+)`", raw_cell)
        ours = raws if cells[2].startswith("same") else re.findall(r"`([^`]+)`", cells[2])
        ours = [o.lower() for o in ours] if cells[2].startswith("same") else ours * (len(raws) // len(ours))
        for dialect in re.findall(r"`([a-z]+)`", dialects.split("(")[0]):
            rows += [(dialect, raw, our) for raw, our in zip(raws, ours, strict=True)]
    return rows


def test_the_mapping_table_covers_every_dialect_with_a_status_word() -> None:
    assert {d for d, _, _ in _mapping_rows()} == set(DIALECTS) - {"xai"}  # xAI's rows are conditions


@pytest.mark.parametrize(("dialect", "raw", "ours"), _mapping_rows())
def test_the_contract_mapping_table_is_what_the_dialects_do(dialect: str, raw: str, ours: str) -> None:
    if dialect == "anthropic":
        body: dict[str, Any] = ANTHROPIC_BATCH | {"processing_status": raw}
    elif dialect in CLOUD_BODIES:
        body = CLOUD_BODIES[dialect](raw)
    else:
        body = {"mistral": MISTRAL_JOB, "together": TOGETHER_BATCH}.get(dialect, AZURE_EXAMPLE) | {"status": raw}
    snap = dialect_for(dialect).parse_batch(body)
    assert (snap.status.value, snap.provider_status) == (ours, raw)
