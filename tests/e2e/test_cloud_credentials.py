"""Cloud credentials over real HTTP: google-auth's service-account flow and botocore's SigV4, against the emulator.

The emulator's token endpoint verifies the JWT assertion google-auth signs with a throw-away key generated here,
and its Bedrock routes recompute every SigV4 signature with botocore; so each test below runs the worker's
real credential code (``worker.providers.google_credentials`` / ``aws_signing``) through ``ProviderClient``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from batch_cancel_emulator.testing import DEFAULT_AWS_KEY, Emulator
from tests.support.cloud import ServiceAccountKey, make_service_account_key
from worker.config import ProvidersFile
from worker.errors import GaveUp, Rejected
from worker.providers import ProviderClient, build_clients

PROJECT, LOCATION = "bcw-test-project", "europe-west4"


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator() as emulator:
        yield emulator


@pytest.fixture
def sa_key(emu: Emulator, tmp_path: Path) -> ServiceAccountKey:
    key = make_service_account_key(tmp_path, emu.google_token_uri)
    emu.trust_google_key(key.key_id, key.client_email, key.public_pem)
    return key


@pytest.fixture(autouse=True)
def _fresh_tokens(emu: Emulator) -> Iterator[None]:
    emu.set_google_tokens()
    yield
    emu.set_google_tokens()


def _vertex(emu: Emulator, account: dict[str, Any], **provider: Any) -> ProviderClient:
    config = {"dialect": "vertex", "base_url": emu.base_url("vertex"), "accounts": {"a": account}, **provider}
    return build_clients(ProvidersFile.model_validate({"providers": {"v": config}}))["v"]


def _sa_account(key: ServiceAccountKey) -> dict[str, Any]:
    return {"project": PROJECT, "location": LOCATION, "google_service_account_file": str(key.path)}


def _job(emu: Emulator, **scenario: Any) -> str:
    return emu.create_batch("vertex", **scenario)


def _tokens(emu: Emulator, since: float) -> list[dict[str, Any]]:
    return [r for r in emu.requests(dialect="google_token") if r["t_mono"] >= since]


@pytest.fixture
async def vertex(emu: Emulator, sa_key: ServiceAccountKey) -> AsyncIterator[ProviderClient]:
    client = _vertex(emu, _sa_account(sa_key))
    yield client
    await client.aclose()


async def test_one_token_serves_concurrent_requests(emu: Emulator, vertex: ProviderClient) -> None:
    start = time.monotonic()
    jobs = [_job(emu) for _ in range(20)]
    snapshots = await asyncio.gather(*(vertex.retrieve("a", job) for job in jobs))
    assert {s.provider_status for s in snapshots} == {"JOB_STATE_RUNNING"}
    assert len(_tokens(emu, start)) == 1  # one refresh, shared under the lock
    paths = {r["path"] for job in jobs for r in emu.requests(batch_id=job)}
    assert paths == {f"/vertex/v1/projects/{PROJECT}/locations/{LOCATION}/batchPredictionJobs/{j}" for j in jobs}


async def test_application_default_credentials_from_a_key_file(
    emu: Emulator, sa_key: ServiceAccountKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(sa_key.path))
    client = _vertex(emu, {"project": PROJECT, "location": LOCATION, "google_application_default": True})
    job = _job(emu, cancelling_polls=0)
    result = await client.cancel("a", job)
    await client.aclose()
    assert result.snapshot.provider_status == "JOB_STATE_CANCELLED"
    assert [r["status"] for r in emu.requests(batch_id=job)] == [200, 200]  # the cancel's {}, then one read


async def test_tokens_are_refreshed_before_they_expire(emu: Emulator, vertex: ProviderClient) -> None:
    """Two-second tokens: the client renews each with a quarter of its life left, so none is ever refused."""
    emu.set_google_tokens(2)
    refreshes = REGISTRY.get_sample_value("bcw_credential_refreshes_total", {"provider": "v", "account": "a"}) or 0
    start = time.monotonic()
    job = _job(emu)
    deadline = time.monotonic() + 30
    while len(_tokens(emu, start)) < 4:
        assert time.monotonic() < deadline, "the token was not refreshed"
        await vertex.retrieve("a", job)
        await asyncio.sleep(0.05)  # pacing between polls, as a follow has; the loop waits on the token count
    statuses = [r["status"] for r in emu.requests(batch_id=job)]
    assert statuses and set(statuses) == {200}  # never a 401: each token was replaced while still valid
    issued = [r["t_mono"] for r in _tokens(emu, start)]
    assert all(later - earlier < 2.0 for earlier, later in itertools.pairwise(issued))
    counted = REGISTRY.get_sample_value("bcw_credential_refreshes_total", {"provider": "v", "account": "a"})
    assert counted == refreshes + len(issued)  # each token minted is one refresh in the metric
    age = REGISTRY.get_sample_value("bcw_credential_age_seconds", {"provider": "v", "account": "a"})
    assert age is not None and 0 <= age < 2.0


async def test_a_revoked_token_gets_one_retry_with_a_new_one(emu: Emulator, vertex: ProviderClient) -> None:
    job = _job(emu)
    await vertex.retrieve("a", job)
    emu.revoke_google_tokens()
    start = time.monotonic()
    snapshot = await vertex.retrieve("a", job)
    assert snapshot.provider_status == "JOB_STATE_RUNNING"
    assert [r["status"] for r in emu.requests(batch_id=job)] == [200, 401, 200]
    assert len(_tokens(emu, start)) == 1


async def test_a_token_refused_again_is_rejected_with_one_retry_only(emu: Emulator, vertex: ProviderClient) -> None:
    emu.set_google_tokens(accept=False)
    start = time.monotonic()
    job = _job(emu)
    with pytest.raises(Rejected) as refused:
        await vertex.cancel("a", job)
    assert refused.value.http_status == 401 and refused.value.code == "UNAUTHENTICATED"
    assert "credentials refused" in refused.value.message
    assert [r["status"] for r in emu.requests(batch_id=job)] == [401, 401]
    assert len(_tokens(emu, start)) == 2  # the first token, and one newly minted for the single retry


async def test_an_unknown_service_account_key_is_rejected_with_the_endpoints_reason(
    emu: Emulator, tmp_path: Path
) -> None:
    untrusted = make_service_account_key(tmp_path, emu.google_token_uri, name="untrusted")  # never registered
    client = _vertex(emu, _sa_account(untrusted))
    start = time.monotonic()
    job = _job(emu)
    with pytest.raises(Rejected) as refused:
        await client.cancel("a", job)
    await client.aclose()
    assert refused.value.code == "credentials_refused" and "invalid_grant" in refused.value.message
    assert emu.requests(batch_id=job) == []  # nothing reached the API without a token
    assert [r["status"] for r in _tokens(emu, start)] == [400]  # and the refusal was not retried
    assert "BEGIN PRIVATE KEY" not in str(refused.value)


async def test_an_unreachable_token_endpoint_is_retried_within_the_budget(emu: Emulator, tmp_path: Path) -> None:
    key = make_service_account_key(tmp_path, "http://127.0.0.1:9/token")  # the discard port: refused
    emu.trust_google_key(key.key_id, key.client_email, key.public_pem)
    client = _vertex(emu, _sa_account(key), retry_budget_s=1.5)
    job = _job(emu)
    with pytest.raises(GaveUp) as gave_up:
        await client.retrieve("a", job)
    await client.aclose()
    assert gave_up.value.attempts > 1 and "token endpoint" in gave_up.value.cause
    assert emu.requests(batch_id=job) == []


# --- AWS SigV4 -------------------------------------------------------------------------------------------------------


def _bedrock(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch, secret: str | None = None, **account: Any
) -> ProviderClient:
    access_key, real_secret = DEFAULT_AWS_KEY
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret or real_secret)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    config = {
        "dialect": "bedrock",
        "base_url": emu.base_url("bedrock"),
        "accounts": {"a": {"region": "eu-west-1"} | account},
    }
    return build_clients(ProvidersFile.model_validate({"providers": {"b": config}}))["b"]


async def test_signed_requests_are_verified(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    client = _bedrock(emu, monkeypatch)
    job = emu.create_batch("bedrock", cancelling_polls=1)
    result = await client.cancel("a", job)
    snapshot = await client.retrieve("a", job)
    await client.aclose()
    assert (result.snapshot.provider_status, snapshot.provider_status) == ("Stopping", "Stopped")
    log = emu.requests(batch_id=job)
    assert [(r["method"], r["status"], r["region"]) for r in log] == [
        ("POST", 200, "eu-west-1"),
        ("GET", 200, "eu-west-1"),
        ("GET", 200, "eu-west-1"),
    ]
    assert len({r["headers"]["x-amz-date"] for r in log}) >= 1 and all("x-amz-date" in r["headers"] for r in log)


async def test_a_wrong_secret_is_rejected_after_one_request(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    client = _bedrock(emu, monkeypatch, secret="not-the-secret")
    job = emu.create_batch("bedrock")
    with pytest.raises(Rejected) as refused:
        await client.cancel("a", job)
    await client.aclose()
    assert (refused.value.http_status, refused.value.code) == (403, "InvalidSignatureException")
    assert "signature" in refused.value.message
    assert len(emu.requests(batch_id=job)) == 1
    assert "not-the-secret" not in str(refused.value)


async def test_an_unknown_access_key_is_rejected(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    await _bedrock(emu, monkeypatch).aclose()  # the environment of a good account…
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWN000000000")  # …with a key id AWS does not know
    client = _bedrock_with_env(emu)
    job = emu.create_batch("bedrock")
    with pytest.raises(Rejected) as refused:
        await client.retrieve("a", job)
    await client.aclose()
    assert (refused.value.http_status, refused.value.code) == (403, "UnrecognizedClientException")
    assert len(emu.requests(batch_id=job)) == 1


def _bedrock_with_env(emu: Emulator) -> ProviderClient:
    config = {"dialect": "bedrock", "base_url": emu.base_url("bedrock"), "accounts": {"a": {"region": "eu-west-1"}}}
    return build_clients(ProvidersFile.model_validate({"providers": {"b": config}}))["b"]


async def test_a_session_token_is_sent_and_signed(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    await _bedrock(emu, monkeypatch).aclose()
    monkeypatch.setenv("AWS_SESSION_TOKEN", "FwoGZXIvYXdzEmulatorSessionToken")
    client = _bedrock_with_env(emu)
    job = emu.create_batch("bedrock")
    await client.retrieve("a", job)
    await client.aclose()
    (request,) = emu.requests(batch_id=job)
    assert request["status"] == 200 and request["headers"]["x-amz-security-token"] == "[redacted]"


async def test_expiring_credentials_are_renewed_before_signing(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A ``credential_process`` profile hands out credentials expiring in 14 minutes: inside botocore's
    15-minute advisory window, so every request first has botocore renew them, then signs with the new ones."""
    runs = tmp_path / "runs"
    script = tmp_path / "creds.py"
    access_key, secret = DEFAULT_AWS_KEY
    script.write_text(
        "import datetime, json, sys\n"
        f"open({str(runs)!r}, 'a').write('x')\n"
        "expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=14)\n"
        f"print(json.dumps({{'Version': 1, 'AccessKeyId': {access_key!r}, 'SecretAccessKey': {secret!r},"
        " 'SessionToken': 'process-session', 'Expiration': expires.isoformat()}))\n"
    )
    config = tmp_path / "config"
    config.write_text(f"[profile renewing]\ncredential_process = {sys.executable} {script}\n")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    client = _bedrock_with_env_profile(emu, "renewing")
    job = emu.create_batch("bedrock")
    for _ in range(3):
        await client.retrieve("a", job)
    await client.aclose()
    assert [r["status"] for r in emu.requests(batch_id=job)] == [200, 200, 200]
    assert len(runs.read_text()) >= 3  # at start, then renewed before requests


def _bedrock_with_env_profile(emu: Emulator, profile: str) -> ProviderClient:
    account = {"region": "eu-west-1", "aws_profile": profile}
    config = {"dialect": "bedrock", "base_url": emu.base_url("bedrock"), "accounts": {"a": account}}
    return build_clients(ProvidersFile.model_validate({"providers": {"b": config}}))["b"]


def test_the_emulator_refuses_a_tampered_request(emu: Emulator) -> None:
    """The verifier is real: a request signed by botocore passes, the same signature on another path does not."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    job = emu.create_batch("bedrock")
    other = emu.create_batch("bedrock")
    host = emu.url.removeprefix("http://")
    signed = AWSRequest(method="GET", url=f"{emu.url}/bedrock/model-invocation-job/{job}", headers={"host": host})
    SigV4Auth(Credentials(*DEFAULT_AWS_KEY), "bedrock", "us-east-1").add_auth(signed)
    headers = dict(signed.headers.items())
    with httpx.Client(trust_env=False) as http:
        good = http.get(f"{emu.url}/bedrock/model-invocation-job/{job}", headers=headers)
        moved = http.get(f"{emu.url}/bedrock/model-invocation-job/{other}", headers=headers)
        as_s3 = AWSRequest(method="GET", url=f"{emu.url}/bedrock/model-invocation-job/{job}", headers={"host": host})
        SigV4Auth(Credentials(*DEFAULT_AWS_KEY), "s3", "us-east-1").add_auth(as_s3)
        wrong_service = http.get(f"{emu.url}/bedrock/model-invocation-job/{job}", headers=dict(as_s3.headers.items()))
    assert good.status_code == 200 and json.loads(good.content)["jobArn"].endswith(job)
    assert (moved.status_code, moved.headers["x-amzn-errortype"]) == (403, "InvalidSignatureException")
    assert wrong_service.status_code == 403


async def test_irsa_web_identity_credentials_are_assumed_and_renewed(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """What an EKS pod with an IRSA-annotated service account has: a projected web-identity token and a role.
    botocore's chain exchanges the token at STS (the emulator's); credentials living 14 minutes fall inside
    botocore's renewal window, so each request first renews them, then signs with the new session token."""
    token_file = tmp_path / "token"
    web_token = "eyJemulator.web-identity." + uuid.uuid4().hex
    token_file.write_text(web_token)
    role = "arn:aws:iam::123456789012:role/bcw-bedrock"
    emu.trust_web_identity(web_token, role, session_lifetime_s=14 * 60)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ROLE_ARN", role)
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("AWS_ROLE_SESSION_NAME", "bcw-test")
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", emu.aws_sts_url)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    start = time.monotonic()
    labels = {"provider": "b", "account": "a"}
    refreshes = REGISTRY.get_sample_value("bcw_credential_refreshes_total", labels) or 0
    client = _bedrock_with_env(emu)
    job = emu.create_batch("bedrock")
    for _ in range(3):
        await client.retrieve("a", job)
    await client.aclose()
    log = emu.requests(batch_id=job)
    assert [r["status"] for r in log] == [200, 200, 200]
    assert all(r["headers"]["x-amz-security-token"] == "[redacted]" for r in log)
    exchanges = [r for r in emu.requests(dialect="aws_sts") if r["t_mono"] >= start]
    assert len(exchanges) >= 3 and {r["status"] for r in exchanges} == {200}
    # temporary credentials: obtained at start, then renewed before each request (the metric counts both)
    assert (REGISTRY.get_sample_value("bcw_credential_refreshes_total", labels) or 0) >= refreshes + 3
    assert (REGISTRY.get_sample_value("bcw_credential_age_seconds", labels) or -1) >= 0


async def test_an_untrusted_web_identity_token_is_rejected_with_the_sts_reason(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("eyJnot-trusted")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/bcw-bedrock")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", emu.aws_sts_url)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    client = _bedrock_with_env(emu)
    job = emu.create_batch("bedrock")
    with pytest.raises(Rejected) as refused:
        await client.retrieve("a", job)
    await client.aclose()
    assert refused.value.code == "credentials_refused" and "InvalidIdentityToken" in refused.value.message
    assert emu.requests(batch_id=job) == []
