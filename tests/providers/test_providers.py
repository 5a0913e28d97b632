"""Every dialect's parser and error classifier, on the bodies the providers' public API references show."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker import retry
from worker.config import ProvidersFile
from worker.contract import BatchStatus
from worker.errors import AlreadyTerminal, GaveUp, ProviderError, Rejected, Retryable
from worker.providers import DIALECTS, build_clients, dialect_for

SEED_SILICONFLOW = {
    "id": "batch_rdyqgrcgjg", "object": "batch", "endpoint": "/v1/chat/completions", "errors": None,
    "input_file_id": "file-jkvytbjtow", "completion_window": "24h", "status": "in_queue", "output_file_id": None,
    "error_file_id": None, "created_at": 1741685413, "in_progress_at": None, "expires_at": 1741771813,
    "finalizing_at": None, "completed_at": None, "failed_at": None, "expired_at": None, "cancelling_at": None,
    "cancelled_at": None, "request_counts": None, "metadata": {"description": "nightly eval job"},
}  # fmt: skip
SEED_DASHSCOPE = {
    "id": "batch_abc123", "object": "batch", "endpoint": "/v1/chat/completions",
    "errors": {"object": "list", "data": [{"code": "<string>", "message": "<string>", "param": "<string>", "line": 0}]},
    "input_file_id": "file-abc123", "completion_window": "24h", "status": "validating",
    "output_file_id": "file-xyz789", "error_file_id": "file-err456", "created_at": 1735113344, "in_progress_at": 0,
    "expires_at": 0, "finalizing_at": 0, "completed_at": 0, "failed_at": 0, "expired_at": 0, "cancelled_at": 0,
    "cancelling_at": 0, "request_counts": {"total": 0, "completed": 0, "failed": 0},
    "metadata": {"ds_name": "<string>", "ds_description": "<string>"},
}  # fmt: skip
USAGE = {
    "input_tokens": 0, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 0,
    "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 0,
}  # fmt: skip
SEED_DEEPINFRA = {
    "id": "<string>", "endpoint": "<string>", "input_file_id": "<string>", "completion_window": "<string>",
    "status": "<string>", "created_at": 123, "expires_at": 123, "object": "batch",
    "errors": {"object": "list", "data": [{"code": "<string>", "line": 123, "message": "<string>", "param": "x"}]},
    "output_file_id": "<string>", "error_file_id": "<string>", "in_progress_at": 123, "finalizing_at": 123,
    "completed_at": 123, "failed_at": 123, "expired_at": 123, "cancelling_at": 123, "cancelled_at": 123,
    "request_counts": {"total": 0, "completed": 0, "failed": 0}, "metadata": {}, "model": "<string>", "usage": USAGE,
}  # fmt: skip
SEED_OPENAI = {
    "id": "string", "object": "batch", "endpoint": "string",
    "errors": {"object": "string", "data": [{"code": "string", "message": "string", "param": "string", "line": 42}]},
    "input_file_id": "string", "completion_window": "string", "status": "validating", "output_file_id": "string",
    "error_file_id": "string", "created_at": 42, "in_progress_at": 42, "expires_at": 42, "finalizing_at": 42,
    "completed_at": 42, "failed_at": 42, "expired_at": 42, "cancelling_at": 42, "cancelled_at": 42,
    "request_counts": {"total": 42, "completed": 42, "failed": 42}, "metadata": {},
}  # fmt: skip


@pytest.fixture(autouse=True)
def _fast_retries() -> Iterator[None]:
    with retry.testing(attempts=4):
        yield


def test_siliconflow_seed_in_queue_and_nulls() -> None:
    snap = dialect_for("siliconflow").parse_batch(SEED_SILICONFLOW)
    assert (snap.status, snap.provider_status) == (BatchStatus.QUEUED, "in_queue")
    assert snap.created_at == 1741685413 and snap.in_progress_at is None and snap.cancelled_at is None
    assert snap.errors == [] and snap.request_counts is None


def test_siliconflow_retrieve_shape_and_string_errors() -> None:
    body = SEED_SILICONFLOW | {"status": "cancelling", "errors": ["line 3: bad json"], "request_counts": {}}
    snap = dialect_for("siliconflow").parse_batch(body)
    assert snap.status is BatchStatus.CANCELLING and snap.request_counts is None
    assert [e.message for e in snap.errors] == ["line 3: bad json"]


def test_dashscope_seed_zero_timestamps_and_error_object() -> None:
    snap = dialect_for("dashscope").parse_batch(SEED_DASHSCOPE)
    assert snap.status is BatchStatus.VALIDATING and snap.created_at == 1735113344
    assert snap.in_progress_at is None and snap.expires_at is None and snap.cancelled_at is None
    assert snap.errors[0].code == "<string>" and snap.errors[0].line == 0
    assert snap.request_counts is not None and snap.request_counts.total == 0


def test_deepinfra_seed_free_status_model_usage() -> None:
    snap = dialect_for("deepinfra").parse_batch(SEED_DEEPINFRA)
    assert (snap.status, snap.provider_status) == (BatchStatus.UNKNOWN, "<string>")
    assert snap.model == "<string>" and snap.usage == USAGE and snap.errors[0].line == 123


def test_openai_seed_and_status_vocabulary() -> None:
    openai = dialect_for("openai")
    assert openai.parse_batch(SEED_OPENAI).output_file_id == "string"
    for raw, status in [("cancelling", "cancelling"), ("CANCELLED", "cancelled"), ("expired", "expired")]:
        assert openai.parse_batch(SEED_OPENAI | {"status": raw}).status == status
    assert openai.parse_batch(SEED_OPENAI | {"status": "in_queue"}).status is BatchStatus.UNKNOWN


H: dict[str, str] = {}
OPENAI_409 = {
    "error": {
        "message": "Cannot cancel a batch with status 'completed'.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
}
SF_50505 = {"code": 50505, "message": "Model service overloaded. Please try again later.", "data": "string"}
QUOTA = {
    "error": {"message": "You exceeded your current quota", "type": "insufficient_quota", "code": "insufficient_quota"}
}
DS_THROTTLE = {"code": "Throttling.RateQuota", "message": "Requests rate limit exceeded", "request_id": "r1"}
HTML = "<html><body><h1>502 Bad Gateway</h1><hr>nginx</body></html>"

CASES: list[tuple[str, int, Any, str, type[ProviderError]]] = [
    ("openai", 409, OPENAI_409, "cancel", AlreadyTerminal),
    ("openai", 409, OPENAI_409, "retrieve", Rejected),
    ("openai", 429, QUOTA, "cancel", Rejected),
    ("openai", 429, {"error": {"message": "slow down", "code": "rate_limit_exceeded"}}, "retrieve", Retryable),
    ("openai", 401, {"error": {"message": "Incorrect API key", "code": "invalid_api_key"}}, "cancel", Rejected),
    ("openai", 404, {"error": {"message": "No batch found"}}, "retrieve", Rejected),
    ("openai", 422, {"detail": [{"loc": ["path"], "msg": "bad"}]}, "cancel", Rejected),
    ("openai", 403, "Forbidden", "cancel", Rejected),
    ("openai", 500, HTML, "cancel", Retryable),
    ("openai", 502, HTML, "retrieve", Retryable),
    ("openai", 504, "", "retrieve", Retryable),
    ("siliconflow", 503, SF_50505, "cancel", Retryable),
    ("siliconflow", 400, SF_50505, "cancel", Retryable),  # the code wins whatever the status
    ("siliconflow", 200, {"code": 50603, "message": "busy"}, "retrieve", Retryable),
    ("siliconflow", 429, {"code": 50601, "message": "RPM limit"}, "retrieve", Retryable),
    ("siliconflow", 429, {"message": "rate limited, TPM limit reached.", "data": None}, "cancel", Retryable),
    ("siliconflow", 400, {"code": 20012, "message": "Model does not exist.", "data": None}, "cancel", Rejected),
    ("siliconflow", 401, "Invalid token", "cancel", Rejected),
    ("siliconflow", 403, "Forbidden", "cancel", Rejected),
    ("siliconflow", 404, "404 page not found", "retrieve", Rejected),
    ("siliconflow", 504, "string", "retrieve", Retryable),
    ("siliconflow", 400, {"code": 20015, "message": "Batch with status completed cannot be cancelled."}, "cancel",
     AlreadyTerminal),
    ("dashscope", 429, DS_THROTTLE, "cancel", Retryable),
    ("dashscope", 400, {"code": "Throttling", "message": "Requests throttling triggered."}, "cancel", Retryable),
    ("dashscope", 429, {"error": {"code": "Throttling.AllocationQuota", "message": "quota"}}, "cancel", Retryable),
    ("dashscope", 401, {"code": "InvalidApiKey", "message": "Invalid API-key provided."}, "cancel", Rejected),
    ("dashscope", 429, {"error": {"code": "insufficient_quota", "message": "no money"}}, "cancel", Rejected),
    ("dashscope", 400, {"error": {"message": "Cannot cancel a batch with status 'failed'."}}, "cancel",
     AlreadyTerminal),
    ("deepinfra", 429, {"detail": "Rate limited"}, "retrieve", Retryable),
    ("deepinfra", 422, {"detail": [{"msg": "field required"}]}, "cancel", Rejected),
    ("deepinfra", 400, {"detail": "Batch already completed"}, "cancel", AlreadyTerminal),
    ("deepinfra", 400, {"detail": "bad request"}, "cancel", Rejected),
]  # fmt: skip


@pytest.mark.parametrize(("dialect", "status", "body", "op", "expected"), CASES)
def test_classify(dialect: str, status: int, body: Any, op: Any, expected: type[ProviderError]) -> None:
    verdict = dialect_for(dialect).classify(status, H, body, op)
    assert type(verdict) is expected, verdict
    if isinstance(verdict, Rejected):
        assert verdict.http_status == status and verdict.message


def test_retry_after_travels_with_the_verdict() -> None:
    verdict = dialect_for("siliconflow").classify(503, {"Retry-After": "2"}, SF_50505, "cancel")
    assert isinstance(verdict, Retryable) and verdict.retry_after == 2.0
    verdict = dialect_for("openai").classify(429, {"retry-after-ms": "250"}, {}, "cancel")
    assert isinstance(verdict, Retryable) and verdict.retry_after == 0.25


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=6),
    max_leaves=30,
)
batch_like = st.fixed_dictionaries(
    {"status": st.text(max_size=12)},
    optional={
        k: json_values
        for k in ("errors", "request_counts", "created_at", "cancelled_at", "usage", "model", "output_file_id")
    },
)


@settings(max_examples=300, deadline=None)
@given(dialect=st.sampled_from(sorted(DIALECTS)), body=json_values | batch_like, status=st.integers(100, 599))
def test_random_bodies_only_raise_our_errors(dialect: str, body: Any, status: int) -> None:
    d = dialect_for(dialect)
    with contextlib.suppress(ProviderError):
        d.parse_batch(body)
    assert isinstance(d.classify(status, H, body, "cancel"), ProviderError)
    assert isinstance(d.classify(status, H, json.dumps(body, default=str)[:50], "retrieve"), ProviderError)


# --- the client over httpx.MockTransport -----------------------------------------------------------------------


def _providers(dialect: str = "openai") -> ProvidersFile:
    return ProvidersFile.model_validate(
        {"providers": {"p": {"dialect": dialect, "accounts": {"default": {"api_key_env": "BCW_TEST_KEY"}}}}}
    )


async def _client_with(handler: Any, monkeypatch: pytest.MonkeyPatch, dialect: str = "openai") -> Any:
    monkeypatch.setenv("BCW_TEST_KEY", "sk-test-secret")
    return build_clients(_providers(dialect), transport_factory=lambda: httpx.MockTransport(handler))["p"]


async def test_client_retries_transport_errors_then_gives_up(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ReadError("connection reset", request=request)

    client = await _client_with(handler, monkeypatch)
    with pytest.raises(GaveUp) as info:
        await client.retrieve("default", "batch_1")
    await client.aclose()
    assert info.value.attempts == 4 and len(calls) == 4 and "ReadError" in info.value.cause
    assert calls[0].headers["authorization"] == "Bearer sk-test-secret"
    assert "sk-test-secret" not in str(calls[0].url)


async def test_client_refuses_bad_ids_and_unknown_accounts(monkeypatch: pytest.MonkeyPatch) -> None:
    client = await _client_with(lambda r: httpx.Response(500), monkeypatch)
    for bad in ["../etc", "a/b", "a?b", "a%2F", "x" * 300, ""]:
        with pytest.raises(Rejected) as info:
            await client.cancel("default", bad)
        assert info.value.code == "invalid_batch_id"
    with pytest.raises(Rejected, match="unknown_account"):
        await client.retrieve("nobody", "batch_1")
    await client.aclose()


async def test_cancel_refused_on_in_progress_batch_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(409, json=OPENAI_409)
        return httpx.Response(200, json=SEED_OPENAI | {"status": "in_progress"})

    client = await _client_with(handler, monkeypatch)
    with pytest.raises(Rejected) as info:
        await client.cancel("default", "batch_1")
    await client.aclose()
    assert info.value.http_status == 409


def test_base_url_must_not_carry_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from worker.config import ConfigError, load_providers

    monkeypatch.setenv("BCW_TEST_KEY", "k")
    raw = _providers().model_dump(mode="json")
    raw["providers"]["p"]["base_url"] = "https://user:pw@gateway.example/v1"
    path = tmp_path / "providers.json.yaml"
    path.write_text(json.dumps(raw))  # JSON is YAML; the file is where operators make this mistake
    with pytest.raises(ConfigError, match="base_url"):
        build_clients(load_providers(path))
