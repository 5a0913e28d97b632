"""The Helm chart, checked the way it can be without a cluster: ``helm lint`` and ``helm template`` over the values
variants that matter (tests/deploy/renderer.py), every rendered manifest validated against the Kubernetes schemas
(``kubernetes-validate``) or the vendored CRDs (``deploy/crds``: KEDA, Prometheus Operator), then the properties
that break a deployment silently: probe paths, ports, drain time, replicas under autoscaling, secrets kept out of
ConfigMaps, and the rendered ``BCW_*`` environment accepted by the worker's own ``Settings``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.deploy.renderer import (
    AUTOSCALED,
    CHART,
    CRDS,
    FULLNAME,
    KUBE_VERSIONS,
    SASL_SECRET,
    UID,
    VARIANTS,
    Renderer,
    _container,
    _env,
    _of,
    _one,
    assert_settings_accept,
)
from worker.config import DIALECTS, AccountConfig, ProviderConfig, ProvidersFile, Settings, load_providers
from worker.telemetry.health import HealthServer

# Building helm takes minutes on a cold cache: longer than the suite's default per-test timeout, which covers
# fixture setup too.
pytestmark = pytest.mark.timeout(1800)

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
    "signals_topic": "kafka.signalsTopic",
    "webhooks_port": "webhooks.port",
    "webhooks_max_body_bytes": "webhooks.maxBodyBytes",
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
    "webhooks_host": "the webhook Service reaches the receiver's pod IP, so it must stay 0.0.0.0",
}


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


# Every variant at both ends of the claimed range; in between, the variants that together render every kind of
# Kubernetes' own API the chart has (test_between_variants_cover_every_builtin_kind): an API removed or changed in
# a middle release fails there, at a sixth of the cost of rendering every variant for each of 13 releases.
BETWEEN_VARIANTS = ("cloud", "hpa")
MANIFEST_CASES = [
    (variant, version)
    for version in KUBE_VERSIONS
    for variant in (sorted(VARIANTS) if version in (KUBE_VERSIONS[0], KUBE_VERSIONS[-1]) else BETWEEN_VARIANTS)
]


@pytest.mark.parametrize(("variant", "kube_version"), MANIFEST_CASES)
def test_manifests_valid(chart: Renderer, variant: str, kube_version: str) -> None:
    crds = _crd_schemas()
    docs = chart.render(VARIANTS[variant], kube_version)
    assert docs
    for doc in docs:
        assert doc["metadata"].get("namespace") == "jobs", doc["kind"]
        _validate(doc, kube_version, crds)


def test_between_variants_cover_every_builtin_kind(chart: Renderer) -> None:
    crds = {kind for _, kind in _crd_schemas()}

    def kinds(variants: Iterable[str]) -> set[tuple[str, str]]:
        docs = [doc for v in variants for doc in chart.render(VARIANTS[v])]
        return {(d["apiVersion"], d["kind"]) for d in docs if d["kind"] not in crds}

    assert kinds(BETWEEN_VARIANTS) == kinds(VARIANTS)


def test_schemas_exist_for_every_claimed_version() -> None:
    """kubernetes-validate ships the API schemas of each version the chart claims (else the check is no check)."""
    from kubernetes_validate import utils as kv

    missing = set(KUBE_VERSIONS) - set(kv.all_versions())
    assert not missing, f"no Kubernetes schemas for {sorted(missing)}: upgrade kubernetes-validate (make lock)"


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
    """Every BCW_* variable the chart sets is a real setting with a valid value."""
    env = _env(chart.render(VARIANTS[variant]))
    assert_settings_accept(env, monkeypatch)


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
    for setting in ("commands_topic", "events_topic", "dlq_topic", "follows_topic", "signals_topic", "group_id"):
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
REFERENCE_FIELDS |= {"azure_credential", "azure_tenant_id", "azure_client_id", "azure_client_secret_env"}
REFERENCE_FIELDS |= {"azure_client_secret_file", "azure_certificate_file", "azure_federated_token_file"}
REFERENCE_FIELDS |= {"azure_authority_host"}
# push (issue 28): webhook secrets by env var name or file, the safety-net interval, Bedrock's header name.
REFERENCE_FIELDS |= {"push"}
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
