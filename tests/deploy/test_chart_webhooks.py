"""The chart's webhook receiver (issue 28, push instead of poll), rendered offline like the worker
(tests/deploy/test_chart.py): off by default; when on, its own Deployment, Services, optional Ingress, NetworkPolicy,
PodDisruptionBudget and ServiceMonitor, every manifest valid for each Kubernetes version the chart claims, and the
properties that matter for a process facing the providers' network: only the webhook port is exposed, only
``/webhooks/`` is routed, it talks to Kafka and DNS only, its secrets come by reference and reach it alone, its
probes hit the health server on the metrics port, and its selectors never catch a worker pod (nor the worker's
a receiver pod).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.deploy.renderer import FULLNAME, KUBE_VERSIONS, UID, Renderer, _of, _one, assert_settings_accept
from tests.deploy.test_chart import SECRETISH, _crd_schemas, _validate
from worker.config import Settings

pytestmark = pytest.mark.timeout(1800)  # building helm on a cold cache takes minutes

RECEIVER = f"{FULLNAME}-webhooks"
OPENAI_SECRET = "bcw-webhook-secrets"
GEMINI_SECRET = "gemini-webhook"
GEMINI_SECRETS_DIR = "/var/run/secrets/gemini-webhook"

PUSH_PROVIDERS: dict[str, Any] = {
    "openai": {
        "dialect": "openai",
        "accounts": {
            "default": {
                "api_key_env": "OPENAI_API_KEY",
                # two secrets: a rotation in progress
                "push": {
                    "secrets_env": ["OPENAI_WEBHOOK_SECRET", "OPENAI_WEBHOOK_SECRET_NEXT"],
                    "poll_interval_s": 300,
                },
            }
        },
    },
    "gemini": {
        "dialect": "gemini",
        "accounts": {
            "default": {"api_key_env": "GEMINI_API_KEY", "push": {"secrets_file": f"{GEMINI_SECRETS_DIR}/secrets"}}
        },
    },
    "bedrock": {
        "dialect": "bedrock",
        "accounts": {"prod": {"region": "us-east-1", "push": {"secrets_env": ["BEDROCK_EVENTS_TOKEN"]}}},
    },
}
WEBHOOK_ENV = [
    {"name": "OPENAI_WEBHOOK_SECRET", "secretName": OPENAI_SECRET, "secretKey": "openai"},
    {"name": "OPENAI_WEBHOOK_SECRET_NEXT", "secretName": OPENAI_SECRET, "secretKey": "openai-next"},
    {"name": "BEDROCK_EVENTS_TOKEN", "secretName": OPENAI_SECRET, "secretKey": "bedrock"},
]
API_KEYS = {
    "env": [
        {"name": "OPENAI_API_KEY", "secretName": "llm-api-keys", "secretKey": "OPENAI_API_KEY"},
        {"name": "GEMINI_API_KEY", "secretName": "llm-api-keys", "secretKey": "GEMINI_API_KEY"},
    ]
}

# The receiver with everything on: three push accounts, an Ingress with TLS, a SASL/TLS Kafka on its own port,
# the ServiceMonitor; and the receiver alone, with the defaults and no Ingress.
FULL: dict[str, Any] = {
    "providers": {"config": {"providers": PUSH_PROVIDERS}},
    "apiKeys": API_KEYS,
    "webhooks": {
        "enabled": True,
        "secrets": {"env": WEBHOOK_ENV, "files": [{"secretName": GEMINI_SECRET, "mountPath": GEMINI_SECRETS_DIR}]},
        "ingress": {
            "enabled": True,
            "className": "nginx",
            "host": "bcw.example.com",
            "tlsSecretName": "bcw-tls",
            "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"},
        },
        "settings": {"log_level": "DEBUG"},
    },
    "kafka": {
        "bootstrapServers": "b0.kafka:9096,b1.kafka:9096,b2.kafka",
        "securityProtocol": "SASL_SSL",
        "saslMechanism": "SCRAM-SHA-512",
        "existingSecret": "kafka-credentials",
        "secretKeys": {"ca": "ca.crt"},
        "signalsTopic": "jobs.batch-cancel.signals",
    },
    "serviceMonitor": {"enabled": True},
}
MINIMAL: dict[str, Any] = {
    "providers": {"config": {"providers": {"openai": PUSH_PROVIDERS["openai"]}}},
    "webhooks": {"enabled": True, "secrets": {"env": WEBHOOK_ENV[:2]}},
}
WEBHOOK_VARIANTS = {"full": FULL, "minimal": MINIMAL}


def _deployments(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in _of(docs, "Deployment")}


def _receiver(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return _deployments(docs)[RECEIVER]


def _receiver_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = _receiver(docs)["spec"]["template"]["spec"]["containers"]
    return dict(container)


def _worker_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = _deployments(docs)[FULLNAME]["spec"]["template"]["spec"]["containers"]
    return dict(container)


def _env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container["env"]}


def _named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in _of(docs, kind) if d["metadata"]["name"] == name]
    return doc


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


# --------------------------------------------------------------------------------------- off and on


def test_receiver_is_off_by_default(chart: Renderer) -> None:
    docs = chart.render({})
    assert list(_deployments(docs)) == [FULLNAME]
    assert not [d for d in docs if "webhooks" in d["metadata"]["name"]]
    assert _of(docs, "Ingress") == [] and _of(docs, "NetworkPolicy") == []


def test_signals_topic_is_one_value_for_both(chart: Renderer) -> None:
    """Both processes read BCW_SIGNALS_TOPIC (the receiver writes signals, the worker reads them): one chart value,
    defaulting to the worker's own default."""
    default = _env_of(_worker_container(chart.render({})))["BCW_SIGNALS_TOPIC"]["value"]
    assert default == "batch-cancel.signals"
    if "signals_topic" in Settings.model_fields:
        assert default == Settings.model_fields["signals_topic"].default
    docs = chart.render(FULL)
    for container in (_worker_container(docs), _receiver_container(docs)):
        assert _env_of(container)["BCW_SIGNALS_TOPIC"]["value"] == "jobs.batch-cancel.signals"


@pytest.mark.parametrize("variant", sorted(WEBHOOK_VARIANTS))
def test_helm_lint(chart: Renderer, variant: str) -> None:
    assert "0 chart(s) failed" in chart.lint(WEBHOOK_VARIANTS[variant])


# Ingress and NetworkPolicy are only rendered with the receiver: validated against the oldest and the newest
# claimed version (an API a manifest uses is never removed and added back in between; test_chart.py covers
# every version in between with the worker's variants).
MANIFEST_CASES = [(variant, v) for variant in ("full", "minimal") for v in (KUBE_VERSIONS[0], KUBE_VERSIONS[-1])]


@pytest.mark.parametrize(("variant", "kube_version"), MANIFEST_CASES)
def test_manifests_valid(chart: Renderer, variant: str, kube_version: str) -> None:
    crds = _crd_schemas()
    docs = chart.render(WEBHOOK_VARIANTS[variant], kube_version)
    kinds = {d["kind"] for d in docs if "webhooks" in d["metadata"]["name"]}
    expected = {"Deployment", "Service", "ServiceAccount", "PodDisruptionBudget", "NetworkPolicy"}
    if variant == "full":
        expected |= {"Ingress", "ServiceMonitor"}
    assert kinds == expected
    for doc in docs:
        assert doc["metadata"].get("namespace") == "jobs", doc["kind"]
        _validate(doc, kube_version, crds)


# ----------------------------------------------------------------------------- ports and exposure


@pytest.mark.parametrize("variant", sorted(WEBHOOK_VARIANTS))
def test_services_expose_only_their_port(chart: Renderer, variant: str) -> None:
    """The webhook Service carries the webhook port alone (what an Ingress or a LoadBalancer exposes); the metrics
    port has its own ClusterIP Service for Prometheus. Both select the receiver's pods and no worker pod."""
    docs = chart.render(WEBHOOK_VARIANTS[variant])
    container = _receiver_container(docs)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"webhooks": 8088, "metrics": 9464}
    pod_labels = _receiver(docs)["spec"]["template"]["metadata"]["labels"]
    worker_labels = _deployments(docs)[FULLNAME]["spec"]["template"]["metadata"]["labels"]

    webhooks = _named(docs, "Service", RECEIVER)
    assert webhooks["spec"]["ports"] == [
        {"name": "webhooks", "port": 8088, "targetPort": "webhooks", "protocol": "TCP"}
    ]
    metrics = _named(docs, "Service", f"{RECEIVER}-metrics")
    assert metrics["spec"]["type"] == "ClusterIP"
    assert metrics["spec"]["ports"] == [{"name": "metrics", "port": 9464, "targetPort": "metrics", "protocol": "TCP"}]
    for service in (webhooks, metrics):
        assert _matches(service["spec"]["selector"], pod_labels)
        assert not _matches(service["spec"]["selector"], worker_labels)
    # ...and no worker object selects a receiver pod.
    worker_selector = _deployments(docs)[FULLNAME]["spec"]["selector"]["matchLabels"]
    assert not _matches(worker_selector, pod_labels)
    for service in _of(docs, "Service"):
        if service not in (webhooks, metrics):
            assert not _matches(service["spec"]["selector"], pod_labels), service["metadata"]["name"]
            assert all(p["port"] != 8088 for p in service["spec"]["ports"])


def test_ingress_routes_only_webhooks_to_the_webhook_port(chart: Renderer) -> None:
    docs = chart.render(FULL)
    ingress = _one(docs, "Ingress")["spec"]
    assert "defaultBackend" not in ingress
    assert ingress["ingressClassName"] == "nginx"
    assert ingress["tls"] == [{"hosts": ["bcw.example.com"], "secretName": "bcw-tls"}]
    (rule,) = ingress["rules"]
    assert rule["host"] == "bcw.example.com"
    (path,) = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/webhooks/", "Prefix")
    backend = path["backend"]["service"]
    service = _named(docs, "Service", backend["name"])
    (port,) = [p for p in service["spec"]["ports"] if p["name"] == backend["port"]["name"]]
    container_ports = {p["name"]: p["containerPort"] for p in _receiver_container(docs)["ports"]}
    assert container_ports[port["targetPort"]] == 8088
    assert _one(docs, "Ingress")["metadata"]["annotations"] == {"cert-manager.io/cluster-issuer": "letsencrypt"}
    assert _of(chart.render(MINIMAL), "Ingress") == []


def test_network_policy(chart: Renderer) -> None:
    """In: the webhook port from anywhere, the metrics port from the monitoring namespace only. Out: the Kafka
    ports of the bootstrap servers (9092 where none is given) and DNS, nothing else: it never calls a provider."""
    docs = chart.render(FULL)
    policy = _one(docs, "NetworkPolicy")["spec"]
    assert _matches(policy["podSelector"]["matchLabels"], _receiver(docs)["spec"]["template"]["metadata"]["labels"])
    assert not _matches(
        policy["podSelector"]["matchLabels"], _deployments(docs)[FULLNAME]["spec"]["template"]["metadata"]["labels"]
    )
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    webhook_in, metrics_in = policy["ingress"]
    assert webhook_in == {"ports": [{"port": 8088, "protocol": "TCP"}]}  # no `from`: any source
    assert metrics_in == {
        "ports": [{"port": 9464, "protocol": "TCP"}],
        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
    }
    kafka, dns = policy["egress"]
    assert kafka == {"ports": [{"port": 9096, "protocol": "TCP"}, {"port": 9092, "protocol": "TCP"}]}
    assert dns == {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}

    ingress_controller = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]
    brokers = [{"ipBlock": {"cidr": "10.20.0.0/16"}}]
    otel = {"to": [{"podSelector": {"matchLabels": {"app": "otel-collector"}}}], "ports": [{"port": 4318}]}
    custom = json.loads(json.dumps(FULL))
    custom["webhooks"]["networkPolicy"] = {
        "webhookFrom": ingress_controller,
        "kafkaTo": brokers,
        "kafkaPorts": [9094, 9095],
        "extraEgress": [otel],
    }
    policy = _one(chart.render(custom), "NetworkPolicy")["spec"]
    assert policy["ingress"][0]["from"] == ingress_controller
    assert policy["egress"][0] == {
        "ports": [{"port": 9094, "protocol": "TCP"}, {"port": 9095, "protocol": "TCP"}],
        "to": brokers,
    }
    assert policy["egress"][2:] == [otel]
    off = json.loads(json.dumps(MINIMAL))
    off["webhooks"]["networkPolicy"] = {"enabled": False}
    assert _of(chart.render(off), "NetworkPolicy") == []


@pytest.mark.parametrize("variant", sorted(WEBHOOK_VARIANTS))
def test_probes_on_the_metrics_port(chart: Renderer, variant: str) -> None:
    container = _receiver_container(chart.render(WEBHOOK_VARIANTS[variant]))
    env = _env_of(container)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == int(env["BCW_METRICS_PORT"]["value"]) == 9464
    assert ports["webhooks"] == int(env["BCW_WEBHOOKS_PORT"]["value"]) == 8088
    for probe, path in (("startupProbe", "/livez"), ("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
        assert container[probe]["httpGet"] == {"path": path, "port": "metrics"}, probe
    assert container["args"] == ["webhooks"]


def test_service_monitor_scrapes_the_receivers_metrics_service(chart: Renderer) -> None:
    docs = chart.render(FULL)
    monitor = _named(docs, "ServiceMonitor", RECEIVER)["spec"]
    metrics = _named(docs, "Service", f"{RECEIVER}-metrics")
    assert _matches(monitor["selector"]["matchLabels"], metrics["metadata"]["labels"])
    assert monitor["endpoints"][0]["port"] == "metrics" and monitor["endpoints"][0]["path"] == "/metrics"
    worker_monitor = _named(docs, "ServiceMonitor", FULLNAME)["spec"]
    assert not _matches(worker_monitor["selector"]["matchLabels"], metrics["metadata"]["labels"])
    assert [m["metadata"]["name"] for m in _of(chart.render(MINIMAL), "ServiceMonitor")] == []


# ------------------------------------------------------------------------------------------ secrets


@pytest.mark.parametrize("variant", sorted(WEBHOOK_VARIANTS))
def test_webhook_secrets_by_reference_and_only_to_the_receiver(chart: Renderer, variant: str) -> None:
    values = WEBHOOK_VARIANTS[variant]
    docs = chart.render(values)
    assert _of(docs, "Secret") == [], "the chart references existing Secrets; it never creates one"
    receiver_env = _env_of(_receiver_container(docs))
    for entry in values["webhooks"]["secrets"]["env"]:
        ref = receiver_env[entry["name"]]
        assert "value" not in ref
        assert ref["valueFrom"]["secretKeyRef"] == {"name": entry["secretName"], "key": entry["secretKey"]}
    for name, entry in receiver_env.items():
        if SECRETISH.search(name) and "value" in entry:
            assert name.endswith("_FILE") or entry["value"].startswith("/"), f"{name} carries a literal value"
    # The worker gets neither the webhook secrets nor their mounts; the receiver gets no API key.
    worker = _worker_container(docs)
    assert not {e["name"] for e in values["webhooks"]["secrets"]["env"]} & set(_env_of(worker))
    worker_volumes = _deployments(docs)[FULLNAME]["spec"]["template"]["spec"]["volumes"]
    assert GEMINI_SECRET not in {v.get("secret", {}).get("secretName") for v in worker_volumes}
    assert not {"OPENAI_API_KEY", "GEMINI_API_KEY"} & set(receiver_env)
    assert "envFrom" not in _receiver_container(docs)
    # Its own service account, without the worker's cloud identity.
    pod = _receiver(docs)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == RECEIVER
    account = _named(docs, "ServiceAccount", RECEIVER)
    assert "annotations" not in account["metadata"] and account["automountServiceAccountToken"] is False


def test_secret_files_mounted_read_only_for_the_receiver(chart: Renderer) -> None:
    docs = chart.render(FULL)
    mounts = {m["mountPath"]: m for m in _receiver_container(docs)["volumeMounts"]}
    volumes = {v["name"]: v for v in _receiver(docs)["spec"]["template"]["spec"]["volumes"]}
    assert mounts[GEMINI_SECRETS_DIR]["readOnly"] is True
    assert volumes[mounts[GEMINI_SECRETS_DIR]["name"]]["secret"] == {"secretName": GEMINI_SECRET, "defaultMode": 0o400}
    # The same Kafka credentials and providers file as the worker.
    worker_env, receiver_env = _env_of(_worker_container(docs)), _env_of(_receiver_container(docs))
    for name in ("BCW_KAFKA_BOOTSTRAP_SERVERS", "BCW_KAFKA_SECURITY_PROTOCOL", "BCW_KAFKA_SASL_MECHANISM",
                 "BCW_KAFKA_SASL_USERNAME", "BCW_KAFKA_SASL_PASSWORD_FILE", "BCW_KAFKA_SSL_CAFILE",
                 "BCW_PROVIDERS_FILE"):  # fmt: skip
        assert receiver_env[name] == worker_env[name], name
    assert mounts["/var/run/secrets/kafka"]["readOnly"] is True
    checksum = "checksum/providers"
    assert (
        _receiver(docs)["spec"]["template"]["metadata"]["annotations"][checksum]
        == _deployments(docs)[FULLNAME]["spec"]["template"]["metadata"]["annotations"][checksum]
    )


@pytest.mark.parametrize("field", ["secret", "secrets", "value"])
def test_inline_webhook_secrets_rejected_at_install(chart: Renderer, field: str) -> None:
    values = json.loads(json.dumps(MINIMAL))
    values["providers"]["config"]["providers"]["openai"]["accounts"]["default"]["push"] = {field: "whsec_c2VjcmV0"}
    err = chart.fails(values)
    assert "whsec_c2VjcmV0" not in err
    assert "schema" in err


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"push": {"secrets_env": ["OPENAI_WEBHOOK_SECRET", "MISSING_SECRET"]}},
            "push.secrets_env MISSING_SECRET, which no webhooks.secrets.env entry provides",
        ),
        (
            {"push": {"secrets_file": "/var/run/secrets/elsewhere/secrets"}},
            "push.secrets_file /var/run/secrets/elsewhere/secrets, which is under no webhooks.secrets.files mountPath",
        ),
        ({"push": {"secrets_env": ["OPENAI_WEBHOOK_SECRET"], "header": "x-token"}}, "push.header is for bedrock only"),
        ({"push": {"secrets_env": ["OPENAI_WEBHOOK_SECRET"], "poll_interval_s": 10}}, "poll_interval_s"),
        ({"push": {"poll_interval_s": 300}}, "push"),  # neither secrets_env nor secrets_file
    ],
)
def test_bad_push_config_fails_at_install(chart: Renderer, change: dict[str, Any], message: str) -> None:
    values = json.loads(json.dumps(MINIMAL))
    values["providers"]["config"]["providers"]["openai"]["accounts"]["default"].update(change)
    assert message in chart.fails(values)


def test_push_only_for_dialects_that_push(chart: Renderer) -> None:
    values = json.loads(json.dumps(MINIMAL))
    values["providers"]["config"]["providers"]["anthropic"] = {
        "dialect": "anthropic",
        "accounts": {"default": {"api_key_env": "OPENAI_API_KEY", "push": {"secrets_env": ["OPENAI_WEBHOOK_SECRET"]}}},
    }
    assert "dialect anthropic cannot do" in chart.fails(values)


@pytest.mark.parametrize(
    ("webhooks", "message"),
    [
        ({"ingress": {"enabled": True}}, "webhooks.ingress.host is required"),
        ({"port": 9464}, "webhooks.port (9464) must differ from metrics.port"),
        ({"podDisruptionBudget": {"minAvailable": 1}}, "webhooks.podDisruptionBudget: set only one"),
        ({"service": {"type": "ExternalName"}}, "type"),
        ({"ingres": {}}, "additional properties 'ingres'"),
        ({"extraEnv": [{"name": "BCW_WEBHOOKS_PORT", "value": "1"}]}, "extraEnv"),
        ({"settings": {"max_inflight": 3}}, "max_inflight"),
        ({"networkPolicy": {"metricsFrom": []}}, "webhooks.networkPolicy.metricsFrom"),
    ],
)
def test_bad_webhooks_values_fail_at_install(chart: Renderer, webhooks: dict[str, Any], message: str) -> None:
    values = json.loads(json.dumps(MINIMAL))
    values["webhooks"].update(webhooks)
    assert message in chart.fails(values)


# -------------------------------------------------------------------------------- pod and settings


@pytest.mark.parametrize("variant", sorted(WEBHOOK_VARIANTS))
def test_receiver_pod_hardening(chart: Renderer, variant: str) -> None:
    """The worker's securityContext, token and /tmp; its own PodDisruptionBudget and topology spread."""
    docs = chart.render(WEBHOOK_VARIANTS[variant])
    deployment = _receiver(docs)
    pod = deployment["spec"]["template"]["spec"]
    container = _receiver_container(docs)
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == UID
    assert container["securityContext"] == _worker_container(docs)["securityContext"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert pod["automountServiceAccountToken"] is False
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/tmp"}  # noqa: S108 - emptyDir
    assert container["resources"]["requests"]
    assert deployment["spec"]["replicas"] == 2
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert all(c["labelSelector"]["matchLabels"] == selector for c in pod["topologySpreadConstraints"])
    pdb = _named(docs, "PodDisruptionBudget", RECEIVER)
    assert pdb["spec"]["selector"]["matchLabels"] == selector and pdb["spec"]["maxUnavailable"] == 1
    worker_pdb = _named(docs, "PodDisruptionBudget", FULLNAME)
    assert not _matches(
        worker_pdb["spec"]["selector"]["matchLabels"], deployment["spec"]["template"]["metadata"]["labels"]
    )


@pytest.mark.parametrize("variant", sorted(WEBHOOK_VARIANTS))
def test_receiver_environment_is_the_spec(chart: Renderer, variant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The receiver's BCW_* variables (PUSH-SPEC: BCW_WEBHOOKS_PORT, BCW_WEBHOOKS_MAX_BODY_BYTES, BCW_SIGNALS_TOPIC,
    BCW_METRICS_PORT, the Kafka connection) are settings the process accepts with these values."""
    env = _env_of(_receiver_container(chart.render(WEBHOOK_VARIANTS[variant])))
    assert env["BCW_WEBHOOKS_MAX_BODY_BYTES"]["value"] == "65536"
    assert "BCW_WEBHOOKS_HOST" not in env  # its default, 0.0.0.0: the Service reaches the pod IP
    assert_settings_accept(env, monkeypatch)


def test_worker_providers_file_carries_push(chart: Renderer) -> None:
    """One providers file for both: the worker reads push.poll_interval_s (its safety-net interval) from it."""
    docs = chart.render(FULL)
    (cm,) = [c for c in _of(docs, "ConfigMap") if "providers.yaml" in c["data"]]
    text = cm["data"]["providers.yaml"]
    assert re.search(r"poll_interval_s: 300\b", text)
    assert "OPENAI_WEBHOOK_SECRET" in text and "whsec_" not in text
