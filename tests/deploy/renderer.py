"""The Helm chart rendered offline: the pinned ``helm`` (built from the Go module proxy into ``.cache/`` on first
use), a ``Renderer`` that lints and templates the chart with given values, the values variants that matter, and
helpers to pick documents out of what was rendered. Shared by the chart, dashboard and alert-rule tests.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "batch-cancel-worker"
CRDS = REPO / "deploy" / "crds"

HELM_VERSION = "v3.22.0"
# Kubernetes minor the pinned helm was built against (its k8s.io/client-go v0.37), as helm's own Makefile sets it.
HELM_K8S_MINOR = "37"
HELM_DIR = REPO / ".cache" / "helm" / HELM_VERSION
# The Kubernetes versions the chart claims: from Chart.yaml's kubeVersion floor to the minor the pinned helm
# knows; every manifest is rendered for, and validated against the API schemas of, each of them.
_KUBE_FLOOR = re.fullmatch(r">=1\.(\d+)\.0-0", yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"])
assert _KUBE_FLOOR, "Chart.yaml's kubeVersion is no longer '>=1.N.0-0': update KUBE_VERSIONS' derivation"
KUBE_VERSIONS = tuple(f"1.{minor}.0" for minor in range(int(_KUBE_FLOOR[1]), int(HELM_K8S_MINOR) + 1))

RELEASE = "bcw"
FULLNAME = "bcw-batch-cancel-worker"
UID = 10001


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


def assert_settings_accept(env: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ``BCW_*`` variable in a rendered container ``env`` is a real setting, and together they validate."""
    from worker.config import Settings

    for name in list(os.environ):
        if name.startswith("BCW_"):
            monkeypatch.delenv(name)
    for name, entry in env.items():
        if name.startswith("BCW_"):
            # Only the SASL username comes from a Secret; everything else is a plain value or a file path.
            assert "value" in entry or name == "BCW_KAFKA_SASL_USERNAME", name
            # pydantic-settings ignores BCW_ variables it has no field for: a misspelt name would pass unseen.
            assert name.removeprefix("BCW_").lower() in Settings.model_fields, f"{name} is no setting"
            monkeypatch.setenv(name, entry.get("value", "from-a-secret"))
    Settings()  # raises on an invalid value
