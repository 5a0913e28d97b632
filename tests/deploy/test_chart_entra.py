"""The Helm chart with Azure accounts signing in with Microsoft Entra ID: the AKS workload-identity wiring (the
service account's client-id annotation, the pod label the webhook acts on) renders, and a service principal's
secret or certificate is a reference the chart checks at install, like every other key."""

from __future__ import annotations

import copy
from typing import Any

# The chart fixtures (helm, chart) come from tests/deploy/conftest.py; the helpers from renderer.py.
from tests.deploy.renderer import Renderer, _container, _one

CLIENT_ID = "00000000-0000-0000-0000-0000000000aa"
ENTRA: dict[str, Any] = {
    "image": {"repository": "registry.example.com/batch-cancel-worker-cloud"},
    "providers": {
        "config": {
            "providers": {
                "azure": {
                    "dialect": "azure",
                    "base_url": "https://contoso.openai.azure.com/openai/v1",
                    "accounts": {
                        "default": {"azure_credential": "workload_identity"},
                        "sp": {
                            "azure_credential": "client_secret",
                            "azure_tenant_id": "contoso.onmicrosoft.com",
                            "azure_client_id": CLIENT_ID,
                            "azure_client_secret_env": "AZURE_CLIENT_SECRET",
                        },
                        "cert": {
                            "azure_credential": "certificate",
                            "azure_tenant_id": "contoso.onmicrosoft.com",
                            "azure_client_id": CLIENT_ID,
                            "azure_certificate_file": "/var/run/secrets/azure-sp/cert.pem",
                        },
                    },
                }
            }
        }
    },
    "apiKeys": {
        "env": [  # the chart's default providers file has an openai account too
            {"name": "OPENAI_API_KEY", "secretName": "llm-api-keys", "secretKey": "OPENAI_API_KEY"},
            {"name": "AZURE_CLIENT_SECRET", "secretName": "azure-sp", "secretKey": "client-secret"},
        ],
        "files": [{"secretName": "azure-sp", "mountPath": "/var/run/secrets/azure-sp"}],
    },
    "serviceAccount": {"annotations": {"azure.workload.identity/client-id": CLIENT_ID}},
    "podLabels": {"azure.workload.identity/use": "true"},
}


def test_aks_workload_identity_renders(chart: Renderer) -> None:
    docs = chart.render(ENTRA)
    assert _one(docs, "ServiceAccount")["metadata"]["annotations"] == {"azure.workload.identity/client-id": CLIENT_ID}
    pod = _one(docs, "Deployment")["spec"]["template"]
    assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert pod["spec"]["serviceAccountName"] == _one(docs, "ServiceAccount")["metadata"]["name"]
    env = {e["name"]: e for e in _container(docs)["env"]}
    assert env["AZURE_CLIENT_SECRET"]["valueFrom"]["secretKeyRef"] == {"name": "azure-sp", "key": "client-secret"}


def test_entra_secrets_are_references_checked_at_install(chart: Renderer) -> None:
    values = copy.deepcopy(ENTRA)
    values["apiKeys"]["env"] = values["apiKeys"]["env"][:1]
    assert "azure/sp reads azure_client_secret_env AZURE_CLIENT_SECRET, which no apiKeys.env entry" in (
        chart.fails(values)
    )
    values = copy.deepcopy(ENTRA)
    values["apiKeys"]["files"] = []
    assert "azure/cert reads azure_certificate_file /var/run/secrets/azure-sp/cert.pem, which is under no" in (
        chart.fails(values)
    )
    values = copy.deepcopy(ENTRA)
    values["providers"]["config"]["providers"]["azure"]["accounts"]["sp"]["azure_client_secret"] = "hunter2"
    assert "azure_client_secret" in chart.fails(values)  # a secret value itself is not a setting
