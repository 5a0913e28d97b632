"""Start the emulator as a subprocess for a test or a benchmark, and always stop it.

``with Emulator() as emu:`` binds a free port (the emulator chooses it and prints it; no race), waits with a
deadline until the admin API answers, and on exit kills the process and waits for it, so no test run leaves
a server behind. Admin calls use a small synchronous httpx client: they are setup and assertions, not load.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypedDict, cast

import httpx

from batch_cancel_emulator.app import DEFAULT_KEY, key_id
from batch_cancel_emulator.cloud_auth import DEFAULT_AWS_KEY
from batch_cancel_emulator.model import Fault, Scenario
from batch_cancel_emulator.push import PushRetry
from batch_cancel_emulator.shapes import PREFIXES
from batch_cancel_emulator.tls import TlsFiles, make_tls_files

__all__ = [
    "DEFAULT_AWS_KEY",
    "DEFAULT_KEY",
    "Delivery",
    "Emulator",
    "Fault",
    "PushDialect",
    "PushRetry",
    "Scenario",
    "key_id",
]

#: The dialects whose providers push batch events (``Emulator.push_to``).
PushDialect = Literal["openai", "gemini", "bedrock"]


class Delivery(TypedDict):
    """One delivery attempt as ``Emulator.deliveries`` reads it back (no headers: they would hold the secret)."""

    seq: int  # 1, 2, … in the order attempts finished; ``deliveries(since=...)`` skips up to one
    dialect: str
    batch_id: str  # as the emulator knows it (Gemini without ``batches/``, Bedrock the job id)
    event: str  # batch.cancelled, batch.succeeded, … or Bedrock's detail.status (Stopping, Stopped, …)
    delivery_id: str  # webhook-id (wh_… / msg_…) or the EventBridge event id: the same on every attempt
    attempt: int  # 1 for the first attempt of this event
    url: str
    status: int | None  # the receiver's HTTP status; None when the attempt failed before one (see error)
    error: str | None  # the transport error (connection refused, timeout), else None
    outcome: str  # delivered, retry (another attempt is scheduled), gave_up, dropped (Bedrock: a 4xx)
    webhook_timestamp: int | None  # the signed webhook-timestamp of this attempt (None for Bedrock)
    t_wall: float  # when the attempt was sent (time.time() in the emulator)
    t_mono: float  # the same, on the emulator's monotonic clock (same machine: comparable with the test's)
    t_done_mono: float  # when its answer (or error) came back
    changed_wall: float  # when the batch reached the state the event tells of
    changed_mono: float


#: Dialect → the base URL path the worker is configured with; each dialect adds its own resource path.
_BASES = {
    "openai": "/openai/v1",
    "siliconflow": "/siliconflow/v1",
    "dashscope": "/dashscope/compatible-mode/v1",
    "deepinfra": "/deepinfra/v1/openai",
    "anthropic": "/anthropic/v1",
    "mistral": "/mistral/v1",
    "azure": "/azure/openai/v1",  # the v1 API; the classic one is azure_classic_base_url()
    "together": "/together/v1",
    "xai": "/xai/v1",
    "gemini": "/gemini/v1beta",
    "vertex": "/vertex/v1",  # + /projects/{p}/locations/{l}, from the account's settings
    "bedrock": "/bedrock",
}
assert set(_BASES) == set(PREFIXES.values()), "every emulated dialect needs its base URL here"


def _scenario(scenario: Scenario | None, fields: dict[str, Any]) -> dict[str, Any]:
    """A scenario as the admin API takes it: a ``Scenario``, or its fields as keywords, checked here so a
    misspelt one fails in the test that wrote it."""
    if scenario is not None and fields:
        raise TypeError(f"give a Scenario or its fields as keywords, not both ({sorted(fields)})")
    checked = scenario if scenario is not None else Scenario.model_validate(fields)
    return checked.model_dump(mode="json", exclude_defaults=True)


class Emulator:
    """One emulator process on a free loopback port, its base URLs per dialect, and its admin API.

    ``api_keys`` maps a dialect to the API key it accepts instead of ``DEFAULT_KEY``; ``start_timeout_s``
    bounds the wait for the admin API to answer. ``url`` is the server's root once started. Batches are
    created with a fault ``Scenario`` (``create_batch``, ``create_batches``); what the emulator received is
    read back with ``requests`` and ``stats``; ``set_quota`` and ``add_key`` change it while it runs.
    ``tls=True``: also serve https (Microsoft Entra ID's endpoints, for azure-identity) on ``tls_url``, with a
    certificate from a throw-away CA whose certificate is ``ca_file`` (what the client must trust).
    Push: ``push_to`` makes a dialect's batches deliver webhooks / EventBridge events to a URL when they change
    state, ``deliveries`` reads every delivery attempt back; ``push_concurrency`` bounds the attempts in flight.
    """

    def __init__(
        self,
        *,
        api_keys: dict[str, str] | None = None,
        start_timeout_s: float = 15.0,
        tls: bool = False,
        push_concurrency: int | None = None,
    ) -> None:
        self._args = [f"--api-key={d}={k}" for d, k in (api_keys or {}).items()]
        if push_concurrency is not None:
            self._args.append(f"--push-concurrency={push_concurrency}")
        self._timeout = start_timeout_s
        self._tls = tls
        self._tls_dir: Path | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._admin: httpx.Client | None = None
        self.url = ""
        self.tls_url = ""
        self.ca_file: Path | None = None

    def __enter__(self) -> Emulator:
        self.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        cmd = [sys.executable, "-m", "batch_cancel_emulator", "--host", "127.0.0.1", "--port", "0", *self._args]
        if self._tls:
            self._tls_dir = Path(tempfile.mkdtemp(prefix="bcw-emulator-tls-"))
            files: TlsFiles = make_tls_files(self._tls_dir)
            self.ca_file = files.ca_file
            cmd += ["--tls-cert", str(files.cert_file), "--tls-key", str(files.key_file)]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        try:
            self.url = self._read_url()
            if self._tls:
                self.tls_url = self._read_url()
            self._admin = httpx.Client(base_url=self.url, timeout=10.0, trust_env=False)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _read_url(self) -> str:
        assert self._proc is not None and self._proc.stdout is not None
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(self._proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(self._timeout)
        if not line or "://" not in line[0]:
            raise RuntimeError(f"emulator did not report its address within {self._timeout}s")
        return line[0].strip().rsplit(" ", 1)[-1]

    def _wait_ready(self) -> None:
        assert self._admin is not None
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                if self._admin.get("/_admin/stats").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("emulator did not answer in time")
            time.sleep(0.02)

    def stop(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(timeout=10)
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None
        if self._tls_dir is not None:
            shutil.rmtree(self._tls_dir, ignore_errors=True)
            self._tls_dir = None

    # --- admin API -----------------------------------------------------------------------------------------
    def base_url(self, dialect: str) -> str:
        """What to put in ``ProviderConfig.base_url`` for ``dialect`` (for ``azure``, its v1 API)."""
        return self.url + _BASES[dialect]

    def azure_classic_base_url(self) -> str:
        """``base_url`` for Azure's classic API (with ``api_version`` set in the config)."""
        return self.url + "/azure/openai"

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        assert self._admin is not None, "emulator not started"
        response = self._admin.post(path, json=body)
        if response.status_code >= 300:
            raise RuntimeError(f"emulator admin {path}: {response.status_code} {response.text}")
        return response.json()

    def _get(self, path: str, **params: Any) -> Any:
        assert self._admin is not None, "emulator not started"
        response = self._admin.get(path, params={k: v for k, v in params.items() if v is not None})
        response.raise_for_status()
        return response.json()

    def create_batch(
        self,
        dialect: str,
        batch_id: str | None = None,
        scenario: Scenario | None = None,
        *,
        metadata: dict[str, str] | None = None,
        model: str | None = None,
        endpoint: str | None = None,
        name: str | None = None,
        created_at: int | None = None,
        **fields: Any,
    ) -> str:
        """Create one batch (at any time, also while a worker runs) with a ``Scenario``, or its fields as keywords
        (``faults=[...]``, ``status=...``); ``metadata``, ``model``, ``endpoint``, ``name`` and ``created_at``
        are what a selector's list sees."""
        attributes = _attributes(metadata, model, endpoint, name, created_at)
        body: dict[str, Any] = {"dialect": dialect, "scenario": _scenario(scenario, fields), "attributes": attributes}
        return str(self._post("/_admin/batches", body | ({"id": batch_id} if batch_id else {}))["id"])

    def create_batches(
        self,
        dialect: str,
        count: int,
        *,
        prefix: str | None = None,
        scenario: Scenario | None = None,
        metadata: dict[str, str] | None = None,
        model: str | None = None,
        endpoint: str | None = None,
        name: str | None = None,
        created_at: int | None = None,
        **fields: Any,
    ) -> list[str]:
        """Create ``count`` batches with one scenario and the same attributes (as ``create_batch``); their ids."""
        attributes = _attributes(metadata, model, endpoint, name, created_at)
        body = {"dialect": dialect, "count": count, "scenario": _scenario(scenario, fields), "attributes": attributes}
        return list(self._post("/_admin/batches/bulk", body | ({"prefix": prefix} if prefix else {}))["ids"])

    def list_requests(self, dialect: str | None = None) -> list[dict[str, Any]]:
        """The list requests the emulator answered (oldest first), with their query strings."""
        return [r for r in self.requests(dialect=dialect) if r["op"] == "list"]

    def batch(self, dialect: str, batch_id: str) -> dict[str, Any]:
        return dict(self._get(f"/_admin/batches/{dialect}/{batch_id}"))

    def requests(self, *, dialect: str | None = None, batch_id: str | None = None) -> list[dict[str, Any]]:
        return list(self._get("/_admin/requests", dialect=dialect, batch_id=batch_id)["requests"])

    def stats(self) -> dict[str, Any]:
        return dict(self._get("/_admin/stats"))

    def set_quota(self, dialect: str, requests_per_s: float | None, retry_after_s: float = 1.0) -> None:
        """Answer 429 (with Retry-After) beyond ``requests_per_s`` for the whole dialect; None lifts it."""
        self._post(
            "/_admin/quota", {"dialect": dialect, "requests_per_s": requests_per_s, "retry_after_s": retry_after_s}
        )

    def add_key(self, dialect: str, key: str) -> None:
        self._post("/_admin/keys", {"dialect": dialect, "key": key})

    def reset(self) -> None:
        """Forget batches, the request log, quotas, push targets and deliveries; keep keys and credentials."""
        self._post("/_admin/reset", {})

    # --- push: webhooks and EventBridge events (push.py, push_events.py) ---------------------------------------
    def push_to(
        self,
        dialect: PushDialect,
        url: str | None,
        *,
        secret: str = "",
        header: str | None = None,
        retry: PushRetry | None = None,
        timeout_s: float | None = None,
    ) -> None:
        """From now on, deliver ``dialect``'s batch events to ``url`` (None: stop pushing that dialect).

        openai: the four terminal events, Standard Webhooks signed with ``secret`` (``whsec_<base64>``, or any
        other string used as raw bytes, as OpenAI's SDK reads it); gemini: succeeded / failed / expired (no
        cancelled event), signed with ``secret`` read as base64 like the ``standardwebhooks`` library; bedrock:
        the EventBridge event of every status change with ``header`` (default ``x-bcw-token``) ``: secret``.
        ``retry``: the backoff of failed attempts (default 5 s doubling, 10 attempts; tests pass fast ones);
        ``timeout_s``: per attempt (default 5 s for bedrock as EventBridge, 10 s otherwise). A cancel whose end
        is timed (``cancelling_s``) is ended and delivered on time even if nobody polls; one ended by polls
        (``cancelling_polls``) is delivered when the poll that ends it is answered. Register before the cancels.
        """
        body: dict[str, Any] = {"dialect": dialect, "url": url}
        if url is not None:
            body |= {"secret": secret, "header": header, "timeout_s": timeout_s}
            if retry is not None:
                body["retry"] = retry.model_dump(mode="json")
        self._post("/_admin/push", body)

    def deliveries(self, *, dialect: str | None = None, batch_id: str | None = None, since: int = 0) -> list[Delivery]:
        """Every delivery attempt (oldest first), optionally of one dialect or batch, after ``seq`` ``since``."""
        found = self._get("/_admin/deliveries", dialect=dialect, batch_id=batch_id, since=since or None)
        return cast(list[Delivery], found["deliveries"])

    # --- cloud credentials -----------------------------------------------------------------------------------
    @property
    def google_token_uri(self) -> str:
        """The ``token_uri`` for a test's service-account key file."""
        return self.url + "/google/token"

    def trust_google_key(self, key_id: str, client_email: str, public_key_pem: str) -> None:
        self._post(
            "/_admin/google/keys", {"key_id": key_id, "client_email": client_email, "public_key_pem": public_key_pem}
        )

    def set_google_tokens(self, lifetime_s: float = 3600.0, *, accept: bool = True) -> None:
        """How long access tokens issued from now on live; ``accept=False``: the API refuses every token."""
        self._post("/_admin/google/tokens", {"lifetime_s": lifetime_s, "accept": accept})

    def revoke_google_tokens(self) -> None:
        self._post("/_admin/google/revoke", {})

    @property
    def aws_sts_url(self) -> str:
        """``AWS_ENDPOINT_URL_STS`` for botocore's web-identity (IRSA) provider."""
        return self.url + "/aws/sts"

    def trust_web_identity(self, token: str, role_arn: str, *, session_lifetime_s: float | None = None) -> None:
        body = {"token": token, "role_arn": role_arn, "session_lifetime_s": session_lifetime_s}
        self._post("/_admin/aws/web_identity", body)

    def add_aws_credentials(self, access_key_id: str, secret_access_key: str) -> None:
        self._post("/_admin/aws/credentials", {"access_key_id": access_key_id, "secret_access_key": secret_access_key})

    # --- Microsoft Entra ID (entra.py) --------------------------------------------------------------------------
    @property
    def entra_authority(self) -> str:
        """``azure_authority_host`` / azure-identity's ``authority``: the emulator's TLS listener (``tls=True``)."""
        assert self.tls_url, "start the emulator with tls=True for Entra ID"
        return self.tls_url

    @property
    def imds_host(self) -> str:
        """``AZURE_POD_IDENTITY_AUTHORITY_HOST``: where azure-identity's managed identity asks IMDS."""
        return self.url

    def register_entra_app(
        self,
        tenant: str,
        client_id: str,
        *,
        client_secret: str | None = None,
        certificate_pem: str | None = None,
        federated_token: str | None = None,
    ) -> None:
        body = {
            "tenant": tenant,
            "client_id": client_id,
            "client_secret": client_secret,
            "certificate_pem": certificate_pem,
            "federated_token": federated_token,
        }
        self._post("/_admin/entra/apps", body)

    def assign_managed_identity(self, client_id: str | None = None) -> None:
        """IMDS answers for this user-assigned identity (None: the system-assigned one)."""
        self._post("/_admin/entra/managed", {"client_id": client_id})

    def set_entra_tokens(
        self, lifetime_s: float = 3600.0, *, required: bool = False, accept: bool = True, delay_s: float = 0.0
    ) -> None:
        """How long Entra tokens issued from now on live; ``required``: Azure routes refuse API keys;
        ``accept=False``: they refuse every token too; ``delay_s``: how long each token request takes."""
        body = {"lifetime_s": lifetime_s, "required": required, "accept": accept, "delay_s": delay_s}
        self._post("/_admin/entra/tokens", body)

    def revoke_entra_tokens(self) -> None:
        self._post("/_admin/entra/revoke", {})


def _attributes(
    metadata: dict[str, str] | None, model: str | None, endpoint: str | None, name: str | None, created_at: int | None
) -> dict[str, Any]:
    given = {"metadata": metadata, "model": model, "endpoint": endpoint, "name": name, "created_at": created_at}
    return {key: value for key, value in given.items() if value is not None}
