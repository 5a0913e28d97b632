"""Configuration: environment settings (prefix ``BCW_``) and the operator's providers file.

Two sources on purpose. Settings that differ per deployment (broker address, topics, limits) come from the
environment, as Kubernetes expects. The list of providers and accounts is structured data and lives in one
YAML or TOML file (a ConfigMap); the API keys it refers to are read from environment variables or files
(Secret mounts) and never from the file itself, so the file can be reviewed and committed safely.

Every mistake stops the worker at start with one message naming the key at fault (``ConfigError``);
unknown keys are rejected, never dropped, so a typo cannot silently fall back to a default.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    SecretStr,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.contract import NAME_PATTERN
from worker.contract.topics import COMMANDS_TOPIC, DLQ_TOPIC, EVENTS_TOPIC, FOLLOWS_TOPIC, SIGNALS_TOPIC
from worker.validation import explain

__all__ = [
    "DEFAULT_GEN0_THRESHOLD",
    "DIALECTS",
    "ENTRA_KINDS",
    "AccountConfig",
    "ConfigError",
    "Dialect",
    "EventLoop",
    "KafkaConnection",
    "ProviderConfig",
    "ProvidersFile",
    "Settings",
    "kafka_tls_files",
    "load_providers",
    "trace_exporters",
]

Dialect = Literal[
    "openai", "siliconflow", "dashscope", "deepinfra", "anthropic", "mistral", "azure", "together", "xai",
    "gemini", "vertex", "bedrock",
]  # fmt: skip
#: The dialect names, listed once (in ``Dialect``); ``worker.providers.DIALECTS`` holds their implementations.
DIALECTS: tuple[Dialect, ...] = get_args(Dialect)
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
#: ``BCW_EVENT_LOOP`` (``worker.process``): auto is asyncio's loop (aiokafka#1038 on uvloop).
EventLoop = Literal["auto", "uvloop", "asyncio"]
#: ``BCW_GC_GEN0_THRESHOLD``'s default; CPython's own is 700 (why: worker/process.py).
DEFAULT_GEN0_THRESHOLD = 10_000


def _no_secret_in_url(url: HttpUrl) -> HttpUrl:
    """A base URL is written to logs and spans: one that could carry a secret is refused."""
    if url.username or url.password or url.query or url.fragment:
        raise ValueError("credentials, query or fragment are not allowed in the URL")
    return url


#: A provider's base URL: http(s), and nothing in it that could be a secret.
BaseUrl = Annotated[HttpUrl, AfterValidator(_no_secret_in_url)]


class ConfigError(Exception):
    """The configuration cannot be used; the message says which key and why (never a secret value)."""


#: Dialects whose accounts authenticate with cloud credentials instead of an API key (see ``_CLOUD_FIELDS``).
CLOUD_CREDENTIALS: dict[str, str] = {"vertex": "google", "bedrock": "aws", "azure": "azure"}
#: Account settings that belong to one dialect only: where the account's resources live and how it signs in.
_CLOUD_FIELDS = {
    "vertex": ("project", "location", "google_service_account_file", "google_application_default"),
    "bedrock": ("region", "aws_profile"),
    "azure": (
        "azure_credential",
        "azure_tenant_id",
        "azure_client_id",
        "azure_client_secret_env",
        "azure_client_secret_file",
        "azure_certificate_file",
        "azure_federated_token_file",
        "azure_authority_host",
    ),
}
#: Microsoft Entra ID credential kinds (``worker.providers.azure_credentials``) and the settings each may take.
ENTRA_KINDS: dict[str, frozenset[str]] = {
    "workload_identity": frozenset({"azure_tenant_id", "azure_client_id", "azure_federated_token_file"}),
    "managed_identity": frozenset({"azure_client_id"}),
    "client_secret": frozenset(
        {"azure_tenant_id", "azure_client_id", "azure_client_secret_env", "azure_client_secret_file"}
    ),
    "certificate": frozenset({"azure_tenant_id", "azure_client_id", "azure_certificate_file"}),
}
_GUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


def _https_only(url: HttpUrl) -> HttpUrl:
    if url.scheme != "https":
        raise ValueError("an Entra authority host must be https (azure-identity refuses anything else)")
    if url.path not in (None, "", "/"):
        raise ValueError("an Entra authority host has no path (the tenant is azure_tenant_id)")
    return url


#: Dialects whose providers can push batch changes (docs/push.md): Standard Webhooks (openai, gemini), or an
#: EventBridge API destination (bedrock). Nobody else pushes; their follows poll.
PUSH_DIALECTS = frozenset({"openai", "gemini", "bedrock"})
#: The header an EventBridge connection's API-key auth sends, unless the account names another.
DEFAULT_PUSH_HEADER = "x-bcw-token"


def _read_secrets(env_names: list[str] | None, file: Path | None, what: str) -> list[bytes]:
    """Secrets from variables (one each) or a file (one per line), read at start so a missing one fails then;
    ``what`` names the setting in messages, which never hold a value."""
    if env_names is not None:
        values = []
        for name in env_names:
            value = os.environ.get(name)
            if not value:
                raise ConfigError(f"environment variable {name} ({what}_env) is not set or empty")
            values.append(value.encode())
        return values
    if file is not None:
        try:
            lines = file.read_text().splitlines()
        except OSError as exc:
            raise ConfigError(f"cannot read {what}_file {file}: {exc.strerror}") from None
        values = [line.strip().encode() for line in lines if line.strip()]
        if not values:
            raise ConfigError(f"{what}_file {file} holds no secret")
        return values
    return []


class PushConfig(BaseModel):
    """The account's provider pushes batch changes to ``batch-cancel-worker webhooks`` (docs/push.md): its
    follows then poll only as a safety net, every ``poll_interval_s``, and at once when a signal arrives."""

    model_config = ConfigDict(extra="forbid")

    secrets_env: list[str] | None = Field(
        None,
        min_length=1,
        description="Variables holding the webhook signing secrets (openai, gemini: whsec_...) or the EventBridge "
        "connection's API key (bedrock); several while a secret rotates.",
    )
    secrets_file: Path | None = Field(None, description="A file with one such secret per line (a Secret mount).")
    poll_interval_s: float = Field(
        300.0,
        ge=30,
        le=3600,
        description="Routine polls of this account's follows after the cancel's confirmation (the safety net "
        "for a lost push).",
    )
    header: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9-]{1,64}$")] | None = Field(
        None,
        description=f"bedrock: the header the EventBridge connection sends its API key in ({DEFAULT_PUSH_HEADER}).",
    )

    @model_validator(mode="after")
    def _one_secret_source(self) -> PushConfig:
        if (self.secrets_env is None) == (self.secrets_file is None):
            raise ValueError("give exactly one of secrets_env or secrets_file")
        return self

    def load_secrets(self) -> list[bytes]:
        return _read_secrets(self.secrets_env, self.secrets_file, "push.secrets")


class AccountConfig(BaseModel):
    """Where one credential comes from: an API key (an environment variable or a file), or, for ``vertex`` and
    ``bedrock``, the cloud's own credentials plus where the account's resources live. Which fields a dialect
    needs is checked by ``ProviderConfig``, which knows the dialect."""

    model_config = ConfigDict(extra="forbid")

    api_key_env: str | None = Field(None, description="Name of the environment variable holding the API key.")
    api_key_file: Path | None = Field(None, description="File holding the API key (e.g. a Kubernetes Secret mount).")
    signing_keys_env: list[str] | None = Field(
        None,
        min_length=1,
        description="Require signed commands (worker/signing.py): variables holding this account's publishing keys; "
        "several for rotation.",
    )
    signing_keys_file: Path | None = Field(
        None, description="Require signed commands: a file with one publishing key per line (Secret mount)."
    )
    push: PushConfig | None = Field(
        None, description="openai, gemini, bedrock: the provider pushes batch changes (docs/push.md)."
    )

    # --- vertex (Google Cloud) and bedrock (AWS): account settings, never part of a command -----------------
    project: Annotated[str, StringConstraints(pattern=r"^([a-z][a-z0-9-]{4,28}[a-z0-9]|[0-9]{1,20})$")] | None = Field(
        None, description="vertex: the Google Cloud project id (or number) that owns the batch jobs."
    )
    location: Annotated[str, StringConstraints(pattern=r"^[a-z]+(-[a-z]+)*[0-9]{0,2}$", max_length=40)] | None = Field(
        None, description="vertex: the region of the batch jobs, e.g. us-central1 (also picks the API host)."
    )
    google_service_account_file: Path | None = Field(
        None,
        description="vertex: a service-account JSON key file (a Secret mount); google-auth mints and refreshes "
        "access tokens from it.",
    )
    google_application_default: bool = Field(
        False,
        description="vertex: Application Default Credentials instead (GKE workload identity, the metadata server, "
        "GOOGLE_APPLICATION_CREDENTIALS).",
    )
    region: Annotated[str, StringConstraints(pattern=r"^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$")] | None = Field(
        None, description="bedrock: the AWS region of the jobs, e.g. us-east-1 (the endpoint and the SigV4 scope)."
    )
    aws_profile: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.+@-]{1,64}$")] | None = Field(
        None, description="bedrock: a named profile of the AWS config files; unset = the standard credential chain."
    )
    azure_credential: Literal["workload_identity", "managed_identity", "client_secret", "certificate"] | None = Field(
        None,
        description="azure: sign in with Microsoft Entra ID instead of an API key (azure-identity, extra [azure]): "
        "workload_identity (AKS), managed_identity, client_secret or certificate (a service principal).",
    )
    azure_tenant_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9.-]{0,99}$")] | None = Field(
        None,
        description="azure: the Entra tenant (id or domain); workload_identity defaults to AZURE_TENANT_ID, which "
        "the AKS webhook sets.",
    )
    azure_client_id: Annotated[str, StringConstraints(pattern=_GUID)] | None = Field(
        None,
        description="azure: the application (client) id; for managed_identity a user-assigned identity's "
        "(unset: the system-assigned one); workload_identity defaults to AZURE_CLIENT_ID.",
    )
    azure_client_secret_env: str | None = Field(
        None, description="azure client_secret: the environment variable holding the client secret."
    )
    azure_client_secret_file: Path | None = Field(
        None, description="azure client_secret: a file holding the client secret (a Secret mount)."
    )
    azure_certificate_file: Path | None = Field(
        None, description="azure certificate: a PEM file with the certificate and its unencrypted private key."
    )
    azure_federated_token_file: Path | None = Field(
        None,
        description="azure workload_identity: the projected service-account token; defaults to "
        "AZURE_FEDERATED_TOKEN_FILE, which the AKS webhook sets.",
    )
    azure_authority_host: Annotated[HttpUrl, AfterValidator(_https_only)] | None = Field(
        None,
        description="azure: the Entra authority, e.g. https://login.microsoftonline.us (sovereign clouds, a "
        "private endpoint); unset = AZURE_AUTHORITY_HOST or the public cloud. A host set here is not checked by "
        "instance discovery.",
    )

    @model_validator(mode="after")
    def _one_key_source(self) -> AccountConfig:
        if self.api_key_env is not None and self.api_key_file is not None:
            raise ValueError("give exactly one of api_key_env or api_key_file")
        if self.google_service_account_file is not None and self.google_application_default:
            raise ValueError("give at most one of google_service_account_file or google_application_default")
        return self

    def dialect_problem(self, dialect: str) -> str | None:  # noqa: PLR0911 - one answer per misfit
        """What is missing or out of place for ``dialect``; None when the account fits it."""
        if self.push is not None and dialect not in PUSH_DIALECTS:
            return f"push: dialect {dialect} cannot push batch changes (only {', '.join(sorted(PUSH_DIALECTS))})"
        if self.push is not None and self.push.header is not None and dialect != "bedrock":
            return "push.header: only bedrock (an EventBridge connection) sends its secret in a header"
        present = {name for name in self.model_fields_set if getattr(self, name) not in (None, False)}
        foreign = sorted(present & {f for d, fields in _CLOUD_FIELDS.items() if d != dialect for f in fields})
        if foreign:
            return f"{', '.join(foreign)}: not a setting of dialect {dialect}"
        has_key = self.api_key_env is not None or self.api_key_file is not None
        if dialect == "vertex":
            if has_key:
                return "dialect vertex takes Google credentials, not an API key"
            if self.project is None or self.location is None:
                return "dialect vertex needs project and location"
            if self.google_service_account_file is None and not self.google_application_default:
                return "dialect vertex needs google_service_account_file or google_application_default: true"
        elif dialect == "bedrock":
            if has_key:
                return "dialect bedrock signs with AWS credentials (the standard chain), not an API key"
            if self.region is None:
                return "dialect bedrock needs region"
        elif dialect == "azure" and (self.azure_credential is not None or present & set(_CLOUD_FIELDS["azure"])):
            return self._entra_problem(present, has_key)
        elif not has_key:
            return "give exactly one of api_key_env or api_key_file"
        return None

    def _entra_problem(self, present: set[str], has_key: bool) -> str | None:  # noqa: PLR0911 - one per misfit
        """What is wrong with an azure account's Microsoft Entra ID settings; None when they fit."""
        kind = self.azure_credential
        if kind is None:
            return (
                "azure_* settings need azure_credential "
                "(workload_identity, managed_identity, client_secret or certificate)"
            )
        if has_key:
            return "give an API key or azure_credential, not both"
        allowed = ENTRA_KINDS[kind] | {"azure_credential", "azure_authority_host"}
        misplaced = sorted(present & set(_CLOUD_FIELDS["azure"]) - allowed)
        if misplaced:
            return f"{', '.join(misplaced)}: not a setting of azure_credential {kind}"
        if kind == "managed_identity" and self.azure_authority_host is not None:
            return "azure_authority_host: a managed identity gets its tokens from the platform, not an authority"
        if kind in ("client_secret", "certificate") and (self.azure_tenant_id is None or self.azure_client_id is None):
            return f"azure_credential {kind} needs azure_tenant_id and azure_client_id"
        one_secret = (self.azure_client_secret_env is None) != (self.azure_client_secret_file is None)
        if kind == "client_secret" and not one_secret:
            return "azure_credential client_secret needs one of azure_client_secret_env or azure_client_secret_file"
        if kind == "certificate" and self.azure_certificate_file is None:
            return "azure_credential certificate needs azure_certificate_file"
        return None

    def load_azure_client_secret(self) -> SecretStr:
        """The service principal's secret, read now so a missing one fails at start (never part of a message)."""
        if self.azure_client_secret_env is not None:
            value = os.environ.get(self.azure_client_secret_env)
            if not value:
                raise ConfigError(f"environment variable {self.azure_client_secret_env} is not set or empty")
            return SecretStr(value)
        assert self.azure_client_secret_file is not None
        try:
            value = self.azure_client_secret_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"cannot read azure_client_secret_file {self.azure_client_secret_file}: {exc.strerror}"
            ) from None
        if not value:
            raise ConfigError(f"azure_client_secret_file {self.azure_client_secret_file} is empty")
        return SecretStr(value)

    @model_validator(mode="after")
    def _one_signing_source(self) -> AccountConfig:
        if self.signing_keys_env is not None and self.signing_keys_file is not None:
            raise ValueError("give at most one of signing_keys_env or signing_keys_file")
        return self

    def load_signing_keys(self) -> list[bytes]:
        """This account's publishing keys (empty: commands need no signature); a missing one fails at start."""
        return _read_secrets(self.signing_keys_env, self.signing_keys_file, "signing_keys")

    def load_key(self) -> SecretStr:
        """Read the key now, so a missing secret fails at start rather than on the first command."""
        if self.api_key_env is not None:
            value = os.environ.get(self.api_key_env)
            if not value:
                raise ConfigError(f"environment variable {self.api_key_env} is not set or empty")
        else:
            assert self.api_key_file is not None
            try:
                value = self.api_key_file.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"cannot read api_key_file {self.api_key_file}: {exc.strerror}") from None
            if not value:
                raise ConfigError(f"api_key_file {self.api_key_file} is empty")
        return SecretStr(value)


class ProviderConfig(BaseModel):
    """One provider the operator allows commands to name. ``base_url`` defaults to the dialect's own."""

    model_config = ConfigDict(extra="forbid")

    dialect: Dialect
    base_url: BaseUrl | None = Field(
        None, description="Override, e.g. an OpenAI-compatible gateway or a region; required for azure."
    )
    api_version: Annotated[str, StringConstraints(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(-preview)?$")] | None = Field(
        None,
        description="azure only: the classic API's api-version (e.g. 2024-10-21), sent as a query parameter; "
        "unset = the v1 API, which takes none.",
    )
    accounts: dict[Name, AccountConfig] = Field(min_length=1)
    max_concurrency: int = Field(32, ge=1, le=4096, description="HTTP requests in flight per account.")
    max_requests_per_s: float = Field(
        20.0,
        gt=0,
        le=100_000,
        description="Requests per second per account, retries included; the worker halves it on a 429 and climbs "
        "back. 20/s polls 600 cancelling batches at the 30 s interval; raise it to what the provider allows.",
    )
    connect_timeout_s: float = Field(5.0, gt=0)
    read_timeout_s: float = Field(30.0, gt=0)
    retry_budget_s: float = Field(120.0, gt=0, description="Total time one logical call may spend retrying.")

    @model_validator(mode="after")
    def _accounts_fit_the_dialect(self) -> ProviderConfig:
        for name, account in self.accounts.items():
            problem = account.dialect_problem(self.dialect)
            if problem is not None:
                raise ValueError(f"accounts.{name}: {problem}")
        return self

    @model_validator(mode="after")
    def _azure_needs_its_resource(self) -> ProviderConfig:
        if self.dialect == "azure" and self.base_url is None:
            raise ValueError("dialect azure needs base_url: https://RESOURCE.openai.azure.com/openai[/v1]")
        if self.api_version is not None and self.dialect != "azure":
            raise ValueError("api_version applies to dialect azure only")
        return self


class ProvidersFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    providers: dict[Name, ProviderConfig] = Field(min_length=1)

    def load_signing_keys(self) -> dict[tuple[str, str], list[bytes]]:
        """The publishing keys of every account that requires signed commands, by (provider, account).

        Read now, so a missing or empty key fails at start (``ConfigError``) rather than on a command.
        """
        keys = {
            (name, account): config.load_signing_keys()
            for name, provider in self.providers.items()
            for account, config in provider.accounts.items()
        }
        return {k: v for k, v in keys.items() if v}

    def push_intervals(self) -> dict[tuple[str, str], float]:
        """The safety-net poll interval of every account whose provider pushes, by (provider, account)."""
        return {
            (name, account): config.push.poll_interval_s
            for name, provider in self.providers.items()
            for account, config in provider.accounts.items()
            if config.push is not None
        }


def load_providers(path: Path) -> ProvidersFile:
    """Parse a YAML (``.yaml``/``.yml``) or TOML (``.toml``) providers file into validated config."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read providers file {path}: {exc.strerror}") from None
    try:
        raw = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"providers file {path} is not valid {path.suffix.lstrip('.').upper()}: {exc}") from None
    try:
        return ProvidersFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"providers file {path}: {explain(exc)}") from None


class KafkaConnection(BaseSettings):
    """How to reach the Kafka cluster, each from ``BCW_<NAME>``: what a publisher and the worker share.

    The publisher (``worker.publisher``, the ``batch-cancel`` command) reads only these, so a publisher never
    validates the worker's own settings (its tracing exporters, its providers file); the worker's
    ``Settings`` extends them, so one environment serves both.
    """

    model_config = SettingsConfigDict(env_prefix="BCW_", extra="forbid", frozen=True)

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    # Kafka security, applied to every client by ``worker.kafka.connection``; coherence is checked below, the
    # files are read there (at start, before any connection).
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="OAUTHBEARER and GSSAPI are not offered: see docs/security.md."
    )
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = Field(None, description="Prefer kafka_sasl_password_file in Kubernetes.")
    kafka_sasl_password_file: Path | None = Field(None, description="File holding the SASL password (Secret mount).")
    kafka_ssl_cafile: Path | None = Field(None, description="PEM CA bundle for the broker; unset = system CAs.")
    kafka_ssl_certfile: Path | None = Field(None, description="PEM client certificate (mutual TLS).")
    kafka_ssl_keyfile: Path | None = Field(None, description="PEM private key of the client certificate.")
    client_id: str = "batch-cancel-worker"

    @model_validator(mode="after")
    def _kafka_security_is_coherent(self) -> KafkaConnection:
        """Refuse settings the chosen protocol would silently ignore, and protocols missing what they need.

        An operator who sets a CA file or a SASL user on a PLAINTEXT connection believes the traffic is
        protected, and it is not. Raises ``ConfigError`` (which pydantic lets through unwrapped): the message
        names environment variables, the way an operator set them.
        """
        problem = _kafka_security_problem(self)
        if problem is not None:
            raise ConfigError(problem)
        return self


class Settings(KafkaConnection):
    """Deployment settings, each from ``BCW_<NAME>`` (e.g. ``BCW_KAFKA_BOOTSTRAP_SERVERS``); the Kafka connection's
    come from ``KafkaConnection``."""

    model_config = SettingsConfigDict(env_prefix="BCW_", extra="forbid", frozen=True)

    commands_topic: str = COMMANDS_TOPIC
    events_topic: str = EVENTS_TOPIC
    dlq_topic: str = DLQ_TOPIC
    follows_topic: str = Field(
        FOLLOWS_TOPIC,
        description="Compacted; as many partitions as the commands topic. Live follows, resumed by a new owner.",
    )
    signals_topic: str = Field(
        SIGNALS_TOPIC, description="Verified provider pushes: the webhook receiver writes, every worker reads."
    )
    group_id: str = "batch-cancel-worker"
    group_instance_id: str | None = Field(None, description="Static membership (KIP-345), e.g. a StatefulSet pod name.")
    providers_file: Path = Path("providers.yaml")

    max_in_flight: int = Field(
        100_000,
        ge=1,
        description="Commands taken in and not yet final (the follows' waiting commands) before intake pauses.",
    )
    max_command_bytes: int = Field(64 * 1024, ge=256, description="Larger command values are dead-lettered.")
    max_publish_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest record the worker publishes (a dead letter keeps the original)."
    )
    max_poll_interval_ms: int = Field(300_000, ge=1000)
    session_timeout_ms: int = Field(10_000, ge=1000)
    commit_interval_s: float = Field(1.0, gt=0, description="How often finished offsets are committed.")

    follow_initial_interval_s: float = Field(1.0, gt=0)
    follow_max_interval_s: float = Field(30.0, gt=0)
    follow_max_s: float = Field(24 * 3600.0, gt=0, description="Global cap on following one batch.")
    follow_intent_delay_s: float = Field(
        1.0,
        ge=0,
        description="How long a new follow's intent waits for the cancel's answer before it is written "
        "anyway (0: at once); see docs/durable-follows.md.",
    )
    shutdown_grace_s: float = Field(
        10.0,
        ge=0,
        description="SIGTERM or revocation: time provider calls on the wire and state writes get to finish; "
        "follows themselves move to the next owner.",
    )
    signed_command_max_age_s: float = Field(
        300.0, gt=0, description="Signed commands older (or further in the future) than this are refused."
    )

    webhooks_host: str = Field(
        "0.0.0.0",  # noqa: S104 - the receiver faces the providers through a Service or an Ingress
        description="batch-cancel-worker webhooks: the address it listens on for provider deliveries.",
    )
    webhooks_port: int = Field(8088, ge=1, le=65535, description="batch-cancel-worker webhooks: its port.")
    webhooks_write_timeout_s: float = Field(
        10.0,
        gt=0,
        le=60,
        description="How long a delivery waits for its signal to be durable before the answer is 503 (providers "
        "stop waiting after 15-30 s and deliver again).",
    )
    webhooks_max_body_bytes: int = Field(
        64 * 1024, ge=1024, le=8 * 1024 * 1024, description="Larger deliveries are refused with 413 before reading."
    )

    metrics_host: str = "0.0.0.0"  # noqa: S104 - a probe/metrics port inside a pod must listen on the pod IP
    metrics_port: int = Field(9464, ge=0, le=65535, description="Prometheus /metrics, /livez, /readyz; 0 = off.")
    log_format: Literal["json", "console"] = "json"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    event_loop: EventLoop = Field(
        "auto",
        description="auto: asyncio's own loop (aiokafka is not safe on uvloop, aio-libs/aiokafka#1038); "
        "uvloop: uvloop.",
    )
    gc_gen0_threshold: int = Field(
        DEFAULT_GEN0_THRESHOLD,
        ge=100,
        description="Net allocations between young-generation garbage collections (CPython's default: 700); "
        "see worker/process.py.",
    )

    @model_validator(mode="after")
    def _intervals(self) -> Settings:
        if self.follow_initial_interval_s > self.follow_max_interval_s:
            raise ValueError("follow_initial_interval_s must not exceed follow_max_interval_s")
        return self

    @model_validator(mode="after")
    def _trace_exporters_are_known(self) -> Settings:
        """``OTEL_*`` is OpenTelemetry's own configuration, read from the environment like these settings: an
        exporter this build cannot run fails the start (exit 2) instead of silently exporting nothing."""
        trace_exporters(os.environ)
        return self


def unknown_settings(environ: Mapping[str, str]) -> list[str]:
    """``BCW_*`` names in ``environ`` that are no setting (names only: a value may be a secret)."""
    return sorted(k for k in environ if k.startswith("BCW_") and k[4:].lower() not in Settings.model_fields)


def _kafka_security_problem(settings: KafkaConnection) -> str | None:  # noqa: PLR0911 - one return per problem
    protocol = settings.kafka_security_protocol
    uses_sasl, uses_tls = protocol.startswith("SASL_"), protocol.endswith("SSL")
    sasl_set = [
        name
        for name, value in (
            ("BCW_KAFKA_SASL_MECHANISM", settings.kafka_sasl_mechanism),
            ("BCW_KAFKA_SASL_USERNAME", settings.kafka_sasl_username),
            ("BCW_KAFKA_SASL_PASSWORD", settings.kafka_sasl_password),
            ("BCW_KAFKA_SASL_PASSWORD_FILE", settings.kafka_sasl_password_file),
        )
        if value is not None
    ]
    tls_set = [name for name, value in kafka_tls_files(settings) if value is not None]
    if sasl_set and not uses_sasl:
        return f"{', '.join(sasl_set)} set but BCW_KAFKA_SECURITY_PROTOCOL={protocol} does not use SASL (use SASL_SSL)"
    if tls_set and not uses_tls:
        return (
            f"{', '.join(tls_set)} set but BCW_KAFKA_SECURITY_PROTOCOL={protocol} does not use TLS "
            "(use SSL or SASL_SSL)"
        )
    if uses_sasl:
        if settings.kafka_sasl_mechanism is None:
            return f"BCW_KAFKA_SECURITY_PROTOCOL={protocol} needs BCW_KAFKA_SASL_MECHANISM"
        if not settings.kafka_sasl_username:
            return f"BCW_KAFKA_SECURITY_PROTOCOL={protocol} needs BCW_KAFKA_SASL_USERNAME"
        if (settings.kafka_sasl_password is None) == (settings.kafka_sasl_password_file is None):
            return "give exactly one of BCW_KAFKA_SASL_PASSWORD or BCW_KAFKA_SASL_PASSWORD_FILE"
        if settings.kafka_sasl_password is not None and not settings.kafka_sasl_password.get_secret_value():
            return "BCW_KAFKA_SASL_PASSWORD is empty"
    if uses_tls and settings.kafka_ssl_keyfile is not None and settings.kafka_ssl_certfile is None:
        return "BCW_KAFKA_SSL_KEYFILE needs BCW_KAFKA_SSL_CERTFILE (the client certificate)"
    return None


def kafka_tls_files(settings: KafkaConnection) -> tuple[tuple[str, Path | None], ...]:
    """The TLS files, each with the variable that sets it (for messages)."""
    return (
        ("BCW_KAFKA_SSL_CAFILE", settings.kafka_ssl_cafile),
        ("BCW_KAFKA_SSL_CERTFILE", settings.kafka_ssl_certfile),
        ("BCW_KAFKA_SSL_KEYFILE", settings.kafka_ssl_keyfile),
    )


def trace_exporters(environ: Mapping[str, str]) -> tuple[str, ...]:
    """The span exporters ``OTEL_TRACES_EXPORTER`` names (``console``, ``otlp``), none for ``none``.

    OpenTelemetry's default is ``otlp``; ours is ``none`` unless an OTLP endpoint is configured, because a
    worker that tries to reach ``localhost:4318`` by default logs export errors forever in most clusters.
    OTLP is exported over http/protobuf only (the ``[otlp]`` extra).
    """
    endpoint_set = any(k in environ for k in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
    names = [n.strip() for n in environ.get("OTEL_TRACES_EXPORTER", "otlp" if endpoint_set else "none").split(",")]
    names = [n for n in names if n and n != "none"]
    unknown = [n for n in names if n not in ("console", "otlp")]
    if unknown:
        raise ConfigError(f"OTEL_TRACES_EXPORTER: unsupported exporter {unknown[0]!r} (use otlp, console or none)")
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", environ.get("OTEL_EXPORTER_OTLP_PROTOCOL"))
    if "otlp" in names and protocol not in (None, "http/protobuf"):
        raise ConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: this build exports OTLP over http/protobuf")
    return tuple(dict.fromkeys(names))
