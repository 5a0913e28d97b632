"""Azure accounts signing in with Microsoft Entra ID, one per credential kind, wired to a TLS emulator.

``entra_provider`` registers throw-away identities at the emulator (``Emulator(tls=True)``), writes the files a
pod would have (a certificate, a projected service-account token) and returns the providers-file block, the
worker's environment (the AKS webhook's ``AZURE_*`` variables, the emulator's CA, the IMDS address) and every
string that must never appear in any output.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from batch_cancel_emulator.testing import Emulator
from tests.support.cloud import make_entra_certificate

__all__ = ["ENTRA_ACCOUNTS", "TENANT", "EntraSetup", "entra_provider"]

TENANT = "contoso.onmicrosoft.com"
#: The accounts of ``entra_provider`` that sign in successfully, one per credential kind.
ENTRA_ACCOUNTS = ("secret", "certificate", "workload", "managed")


@dataclass(frozen=True)
class EntraSetup:
    yaml: str  # the providers-file block of the provider (indented under ``providers:``)
    env: dict[str, str]
    secrets: tuple[str, ...]  # strings that must never reach an event, a log line, a metric or a request log


def entra_provider(emu: Emulator, workdir: Path, provider: str = "azure") -> EntraSetup:
    """Accounts ``secret``, ``certificate``, ``workload``, ``managed`` (each kind, all trusted), ``shortlived``
    (a client secret, for tests that change the token lifetime) and ``wrongsecret`` (Entra refuses it)."""
    assert emu.ca_file is not None, "the emulator must serve TLS (Emulator(tls=True))"
    ids = {name: str(uuid.uuid4()) for name in ("secret", "short", "wrong", "certificate", "workload", "managed")}
    secret, short, wrong = (f"entra-{name}-secret-{uuid.uuid4().hex}" for name in ("good", "short", "wrong"))
    emu.register_entra_app(TENANT, ids["secret"], client_secret=secret)
    emu.register_entra_app(TENANT, ids["short"], client_secret=short)
    emu.register_entra_app(TENANT, ids["wrong"], client_secret=f"not-{wrong}")
    certificate = make_entra_certificate(workdir, name=f"{provider}-app")
    emu.register_entra_app(TENANT, ids["certificate"], certificate_pem=certificate.certificate_pem)
    federated = "eyJhbGciOiJSUzI1NiJ9.projected-token." + uuid.uuid4().hex
    token_file = workdir / f"{provider}-azure-identity-token"
    token_file.write_text(federated)
    emu.register_entra_app(TENANT, ids["workload"], federated_token=federated)
    emu.assign_managed_identity(ids["managed"])
    authority = f"azure_authority_host: {emu.entra_authority}"

    def sp(client: str, secret_env: str) -> str:
        return (
            f"{{ azure_credential: client_secret, azure_tenant_id: {TENANT}, azure_client_id: {client}, "
            f"azure_client_secret_env: {secret_env}, {authority} }}"
        )

    yaml = (
        f"  {provider}:\n"
        "    dialect: azure\n"
        f"    base_url: {emu.base_url('azure')}\n"
        "    max_requests_per_s: 5000\n"
        "    accounts:\n"
        f"      secret: {sp(ids['secret'], 'E2E_AZURE_SECRET')}\n"
        f"      shortlived: {sp(ids['short'], 'E2E_AZURE_SHORT_SECRET')}\n"
        f"      wrongsecret: {sp(ids['wrong'], 'E2E_AZURE_WRONG_SECRET')}\n"
        f"      certificate: {{ azure_credential: certificate, azure_tenant_id: {TENANT}, "
        f"azure_client_id: {ids['certificate']}, azure_certificate_file: {certificate.path}, {authority} }}\n"
        f"      workload: {{ azure_credential: workload_identity, {authority} }}\n"
        f"      managed: {{ azure_credential: managed_identity, azure_client_id: {ids['managed']} }}\n"
    )
    env = {
        "REQUESTS_CA_BUNDLE": str(emu.ca_file),
        # what the AKS workload-identity webhook injects into a labelled pod
        "AZURE_TENANT_ID": TENANT,
        "AZURE_CLIENT_ID": ids["workload"],
        "AZURE_FEDERATED_TOKEN_FILE": str(token_file),
        "AZURE_POD_IDENTITY_AUTHORITY_HOST": emu.imds_host,
        "E2E_AZURE_SECRET": secret,
        "E2E_AZURE_SHORT_SECRET": short,
        "E2E_AZURE_WRONG_SECRET": wrong,
    }
    private_key_line = certificate.path.read_text().splitlines()[2]  # a line from inside the private key
    return EntraSetup(yaml, env, (secret, short, wrong, federated, private_key_line, "emulator-entra."))
