"""Gemini API, Vertex AI and Bedrock without a network: parsing, error classification, ids, configuration, extras.

The credential flows themselves (google-auth against a token endpoint, botocore's SigV4 against a verifier) run
over real HTTP in tests/e2e/test_cloud_credentials.py; here the wire is an ``httpx.MockTransport``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from worker.config import ConfigError, ProvidersFile
from worker.contract import BatchStatus
from worker.errors import AlreadyTerminal, ProviderError, Rejected, Retryable
from worker.providers import build_clients, dialect_for

#: 2026-12-01T10:00:00Z, the time every example starts at.
T0 = 1796119200
GEMINI_OP: dict[str, Any] = {
    "name": "batches/abc123",
    "metadata": {
        "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
        "name": "batches/abc123",
        "model": "models/gemini-2.5-flash",
        "state": "BATCH_STATE_CANCELLED",
        "createTime": "2026-12-01T10:00:00.123456789Z",
        "endTime": "2026-12-01T10:05:00.5Z",
        "batchStats": {"requestCount": "10", "successfulRequestCount": "7", "failedRequestCount": "1"},
        "output": {"responsesFile": "files/batch-abc123"},
    },
    "done": True,
}
VERTEX_JOB: dict[str, Any] = {
    "name": "projects/p/locations/us-central1/batchPredictionJobs/123",
    "state": "JOB_STATE_PARTIALLY_SUCCEEDED",
    "model": "projects/p/locations/us-central1/publishers/google/models/gemini-2.5-flash",
    "createTime": "2026-12-01T10:00:00Z",
    "endTime": "2026-12-01T11:00:00.000000001Z",
    "completionStats": {"successfulCount": "8", "failedCount": "1", "incompleteCount": "1"},
    "error": {"code": 3, "message": "1 instance failed"},
}
BEDROCK_JOB: dict[str, Any] = {
    "jobArn": "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abcdefgh1234",
    "modelId": "anthropic.claude-3-haiku-20240307-v1:0",
    "status": "Failed",
    "message": "S3 access denied for the input",
    "submitTime": "2026-12-01T10:00:00Z",
    "endTime": "2026-12-01T10:01:00Z",
    "jobExpirationTime": "2026-12-02T10:00:00Z",
}


def test_gemini_operation_with_string_counts_and_nanosecond_times() -> None:
    snap = dialect_for("gemini").parse_batch(GEMINI_OP)
    assert (snap.status, snap.provider_status) == (BatchStatus.CANCELLED, "BATCH_STATE_CANCELLED")
    assert snap.request_counts is not None
    assert (snap.request_counts.total, snap.request_counts.completed, snap.request_counts.failed) == (10, 7, 1)
    assert snap.created_at == T0 and snap.cancelled_at == T0 + 300
    assert snap.output_file_id == "files/batch-abc123" and snap.model == "models/gemini-2.5-flash"


def test_gemini_running_after_a_cancel_is_not_an_end() -> None:
    body = GEMINI_OP | {"metadata": GEMINI_OP["metadata"] | {"state": "BATCH_STATE_RUNNING"}, "done": False}
    snap = dialect_for("gemini").parse_batch(body)
    assert snap.status is BatchStatus.IN_PROGRESS and snap.cancelled_at is None


@pytest.mark.parametrize(
    "body", [{}, {"name": "batches/x"}, {"metadata": {"state": 3}}, "<html>bad gateway</html>", {"state": "x"}]
)
def test_gemini_non_operations_are_retryable(body: object) -> None:
    with pytest.raises(Retryable):
        dialect_for("gemini").parse_batch(body)


def test_vertex_job_counts_times_and_error() -> None:
    snap = dialect_for("vertex").parse_batch(VERTEX_JOB)
    assert (snap.status, snap.provider_status) == (BatchStatus.COMPLETED, "JOB_STATE_PARTIALLY_SUCCEEDED")
    assert snap.request_counts is not None
    assert (snap.request_counts.total, snap.request_counts.completed, snap.request_counts.failed) == (10, 8, 1)
    assert snap.completed_at == T0 + 3600
    assert [(e.code, e.message) for e in snap.errors] == [("3", "1 instance failed")]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("JOB_STATE_PAUSED", BatchStatus.IN_PROGRESS),  # "can be resumed": following goes on
        ("JOB_STATE_CANCELLING", BatchStatus.CANCELLING),
        ("JOB_STATE_PENDING", BatchStatus.QUEUED),
        ("JOB_STATE_UNSPECIFIED", BatchStatus.UNKNOWN),
        ("JOB_STATE_SOMETHING_NEW", BatchStatus.UNKNOWN),
    ],
)
def test_vertex_states(raw: str, expected: BatchStatus) -> None:
    snap = dialect_for("vertex").parse_batch({"state": raw})
    assert (snap.status, snap.provider_status) == (expected, raw)
    assert not snap.terminal


def test_bedrock_failed_job_keeps_its_message_and_iso_times() -> None:
    snap = dialect_for("bedrock").parse_batch(BEDROCK_JOB)
    assert (snap.status, snap.provider_status) == (BatchStatus.FAILED, "Failed")
    assert [e.message for e in snap.errors] == ["S3 access denied for the input"]
    assert (snap.created_at, snap.failed_at, snap.expires_at) == (T0, T0 + 60, T0 + 86_400)
    assert snap.request_counts is None  # no record counts in this answer: none invented


def test_bedrock_record_counts_when_present() -> None:
    body = BEDROCK_JOB | {"status": "Stopped", "totalRecordCount": 10, "successRecordCount": 4, "errorRecordCount": 0}
    snap = dialect_for("bedrock").parse_batch(body)
    assert snap.status is BatchStatus.CANCELLED and snap.errors == []
    assert snap.request_counts is not None and (snap.request_counts.total, snap.request_counts.completed) == (10, 4)


def test_bedrock_answer_without_a_job_is_retryable() -> None:
    with pytest.raises(Retryable):
        dialect_for("bedrock").parse_batch({"status": "Completed"})  # no jobArn: not a job


# --- errors ---------------------------------------------------------------------------------------------------------


def _google_error(code: int, status: str, message: str, reason: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if reason:
        error["details"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason}]
    return {"error": error}


@pytest.mark.parametrize(
    "case",
    [
        ("gemini", 400, _google_error(400, "INVALID_ARGUMENT", "API key not valid.", "API_KEY_INVALID"), {},
         "cancel", Rejected, "API_KEY_INVALID"),
        ("gemini", 400, _google_error(400, "FAILED_PRECONDITION", "batch is done"), {}, "cancel",
         AlreadyTerminal, None),
        ("gemini", 400, _google_error(400, "INVALID_ARGUMENT", "bad"), {}, "retrieve", Rejected, "INVALID_ARGUMENT"),
        ("gemini", 429, _google_error(429, "RESOURCE_EXHAUSTED", "quota"), {}, "cancel", Retryable, None),
        ("gemini", 404, _google_error(404, "NOT_FOUND", "no batch"), {}, "retrieve", Rejected, "NOT_FOUND"),
        ("vertex", 401, _google_error(401, "UNAUTHENTICATED", "invalid credentials"), {}, "cancel",
         Rejected, "UNAUTHENTICATED"),
        ("vertex", 403, _google_error(403, "PERMISSION_DENIED", "aiplatform.batchPredictionJobs.cancel"), {},
         "cancel", Rejected, "PERMISSION_DENIED"),
        ("vertex", 503, _google_error(503, "UNAVAILABLE", "try again"), {}, "retrieve", Retryable, None),
        ("bedrock", 400, {"message": "job is completed"}, {"x-amzn-errortype": "ValidationException:http://x"},
         "cancel", AlreadyTerminal, None),
        ("bedrock", 400, {"message": "conflict"}, {"x-amzn-errortype": "ConflictException"}, "cancel",
         AlreadyTerminal, None),
        ("bedrock", 400, {"message": "bad id"}, {"x-amzn-errortype": "ValidationException"}, "retrieve",
         Rejected, "ValidationException"),
        ("bedrock", 403, {"message": "signature mismatch"}, {"x-amzn-errortype": "InvalidSignatureException"},
         "cancel", Rejected, "InvalidSignatureException"),
        ("bedrock", 400, {"__type": "com.amazon.coral#ExpiredTokenException", "message": "expired"}, {}, "cancel",
         Rejected, "ExpiredTokenException"),
        ("bedrock", 429, {"message": "slow down"}, {"x-amzn-errortype": "ThrottlingException"}, "cancel",
         Retryable, None),
        ("bedrock", 404, {"message": "no job"}, {"x-amzn-errortype": "ResourceNotFoundException"}, "retrieve",
         Rejected, "ResourceNotFoundException"),
    ],
)  # fmt: skip
def test_classify(case: tuple[str, int, Any, dict[str, str], Any, type[ProviderError], str | None]) -> None:
    dialect, status, body, headers, op, expected, code = case
    verdict = dialect_for(dialect).classify(status, httpx.Headers(headers), body, op)
    assert type(verdict) is expected, verdict
    if isinstance(verdict, Rejected):
        assert verdict.code == code and verdict.http_status == status


# --- ids, wire, configuration ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dialect", "batch_id"),
    [
        ("gemini", "Batches-UPPER"),
        ("gemini", "batches:x"),
        ("vertex", "job-1"),
        ("vertex", "1" * 21),
        ("bedrock", "abcdefgh123"),  # 11
        ("bedrock", "ABCDEFGH1234"),
        ("bedrock", "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job"),
    ],
)
async def test_ids_are_checked_against_each_providers_own_form(
    dialect: str, batch_id: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    sent: list[httpx.Request] = []
    client = _client(dialect, monkeypatch, tmp_path, sent, lambda _: httpx.Response(200, json={}))
    with pytest.raises(Rejected) as refused:
        await client.cancel("a", batch_id)
    assert refused.value.code == "invalid_batch_id" and sent == []
    await client.aclose()


def _client(
    dialect: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    sent: list[httpx.Request],
    answer: Any,
) -> Any:
    monkeypatch.setenv("BCW_TEST_KEY", "gemini-test-key")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    accounts: dict[str, Any] = {
        "gemini": {"api_key_env": "BCW_TEST_KEY"},
        "vertex": {"project": "my-project", "location": "europe-west4", "google_application_default": True},
        "bedrock": {"region": "eu-central-1"},
    }
    if dialect == "vertex":  # ADC from a key file the test writes (never used: the ids are refused first)
        from tests.support.cloud import make_service_account_key

        key = make_service_account_key(tmp_path, "https://oauth2.googleapis.com/token")
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key.path))

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        response: httpx.Response = answer(request)
        return response

    providers = ProvidersFile.model_validate(
        {"providers": {"p": {"dialect": dialect, "accounts": {"a": accounts[dialect]}}}}
    )
    return build_clients(providers, transport_factory=lambda: httpx.MockTransport(handler))["p"]


async def test_gemini_key_header_and_a_cancel_without_a_body_is_followed_by_one_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={} if request.method == "POST" else GEMINI_OP)

    client = _client("gemini", monkeypatch, tmp_path, sent, answer)
    result = await client.cancel("a", "abc123")
    await client.aclose()
    assert [(r.method, str(r.url)) for r in sent] == [
        ("POST", "https://generativelanguage.googleapis.com/v1beta/batches/abc123:cancel"),
        ("GET", "https://generativelanguage.googleapis.com/v1beta/batches/abc123"),
    ]
    assert all(r.headers["x-goog-api-key"] == "gemini-test-key" and "authorization" not in r.headers for r in sent)
    assert result.snapshot.status is BatchStatus.CANCELLED and result.already_terminal is False


async def test_bedrock_goes_to_the_accounts_region_and_is_signed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"") if request.method == "POST" else httpx.Response(200, json=BEDROCK_JOB)

    client = _client("bedrock", monkeypatch, tmp_path, sent, answer)
    result = await client.cancel("a", "abcdefgh1234")
    await client.aclose()
    assert [str(r.url) for r in sent] == [
        "https://bedrock.eu-central-1.amazonaws.com/model-invocation-job/abcdefgh1234/stop",
        "https://bedrock.eu-central-1.amazonaws.com/model-invocation-job/abcdefgh1234",
    ]
    for request in sent:
        auth = request.headers["authorization"]
        assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDTEST/") and "/eu-central-1/bedrock/aws4_request" in auth
        assert "x-amz-date" in request.headers
    # a failed job before the stop landed: it finished first
    assert result.snapshot.status is BatchStatus.FAILED and result.already_terminal is True


@pytest.mark.parametrize(
    ("dialect", "account", "message"),
    [
        ("vertex", {"location": "us-central1", "google_application_default": True}, "needs project and location"),
        ("vertex", {"project": "my-project", "location": "us-central1"}, "google_service_account_file or"),
        ("vertex", {"project": "my-project", "location": "us-central1", "api_key_env": "K"}, "not an API key"),
        ("vertex", {"project": "My_Project", "location": "us-central1", "google_application_default": True},
         "pattern"),
        ("vertex", {"project": "my-project", "location": "us-central1/x", "google_application_default": True},
         "pattern"),
        ("vertex", {"project": "my-project", "location": "us-central1", "google_application_default": True,
                    "google_service_account_file": "/k.json"}, "at most one"),
        ("bedrock", {}, "needs region"),
        ("bedrock", {"region": "us-east-1", "api_key_env": "K"}, "not an API key"),
        ("bedrock", {"region": "us-east-1/../x"}, "pattern"),
        ("bedrock", {"region": "us-east-1", "project": "my-project"}, "not a setting of dialect bedrock"),
        ("gemini", {"api_key_env": "K", "region": "us-east-1"}, "not a setting of dialect gemini"),
        ("openai", {"api_key_env": "K", "google_application_default": True}, "not a setting of dialect openai"),
        ("gemini", {}, "exactly one of api_key_env or api_key_file"),
    ],
)  # fmt: skip
def test_configuration_mistakes_fail_at_start_naming_the_account(
    dialect: str, account: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message) as refused:
        ProvidersFile.model_validate({"providers": {"p": {"dialect": dialect, "accounts": {"prod": account}}}})
    assert "prod" in str(refused.value) or "pattern" in message


@pytest.mark.parametrize(
    ("dialect", "module", "extra"), [("vertex", "google.auth", "google"), ("bedrock", "botocore", "aws")]
)
def test_a_missing_extra_is_a_start_up_error_naming_it(
    dialect: str, module: str, extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # what an image without the extra sees: ImportError
    account = {"vertex": {"project": "my-project", "location": "us-central1", "google_application_default": True},
               "bedrock": {"region": "us-east-1"}}[dialect]  # fmt: skip
    providers = ProvidersFile.model_validate({"providers": {"p": {"dialect": dialect, "accounts": {"a": account}}}})
    with pytest.raises(ConfigError, match=rf"providers\.p\.accounts\.a .*pip install 'batch-cancel-worker\[{extra}\]'"):
        build_clients(providers)


def test_an_unreadable_service_account_file_fails_at_start_without_its_content(tmp_path: Path) -> None:
    bad = tmp_path / "key.json"
    bad.write_text('{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----\\nSECRETSTUFF"}')
    for path, message in ((bad, "is not a service-account key"), (tmp_path / "missing.json", "cannot read")):
        account = {"project": "my-project", "location": "us-central1", "google_service_account_file": str(path)}
        providers = ProvidersFile.model_validate(
            {"providers": {"v": {"dialect": "vertex", "accounts": {"a": account}}}}
        )
        with pytest.raises(ConfigError, match=message) as refused:
            build_clients(providers)
        assert "SECRETSTUFF" not in str(refused.value) and "providers.v.accounts.a" in str(refused.value)


def test_no_aws_credentials_anywhere_fails_at_start(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    providers = ProvidersFile.model_validate(
        {"providers": {"b": {"dialect": "bedrock", "accounts": {"a": {"region": "us-east-1"}}}}}
    )
    with pytest.raises(ConfigError, match=r"providers\.b\.accounts\.a: no AWS credentials found"):
        build_clients(providers)


def test_account_access_never_shows_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BCW_TEST_KEY", "sk-must-not-show")
    providers = ProvidersFile.model_validate(
        {"providers": {"p": {"dialect": "gemini", "accounts": {"a": {"api_key_env": "BCW_TEST_KEY"}}}}}
    )
    client = build_clients(providers)["p"]
    text = repr(client._access) + str(client.__dict__)
    assert "sk-must-not-show" not in text and "x-goog-api-key" in text


async def test_closing_a_vertex_client_closes_its_token_endpoint_connections_too(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    client = _client("vertex", monkeypatch, tmp_path, [], lambda _: httpx.Response(200, json={}))
    token_clients = [access.auth._request._client for access in client._access.values()]
    assert token_clients and not any(c.is_closed for c in token_clients)
    await client.aclose()
    assert all(c.is_closed for c in token_clients)
