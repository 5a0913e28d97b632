"""Cloud-provider test material: minimal batch bodies per dialect, throw-away Google service-account keys and
Entra ID application certificates.

A service-account key is generated per test (an RSA key made with ``cryptography``, never a real credential),
written as the JSON key file Google issues, with ``token_uri`` pointing at the emulator's token endpoint; the
emulator learns the public half, so google-auth's own service-account flow (a signed JWT assertion exchanged
for an access token) runs for real.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

__all__ = [
    "CLOUD_BODIES",
    "EntraCertificate",
    "ServiceAccountKey",
    "make_entra_certificate",
    "make_service_account_key",
]

CLOUD_BODIES: dict[str, Callable[[str], dict[str, Any]]] = {
    "gemini": lambda raw: {"name": "batches/abc123", "metadata": {"name": "batches/abc123", "state": raw}},
    "vertex": lambda raw: {"name": "projects/p/locations/us-central1/batchPredictionJobs/123", "state": raw},
    "bedrock": lambda raw: {
        "jobArn": "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abcdefgh1234",
        "status": raw,
    },
}


@dataclass(frozen=True)
class ServiceAccountKey:
    path: Path
    key_id: str
    client_email: str
    public_pem: str


def make_service_account_key(directory: Path, token_uri: str, *, name: str = "bcw-test") -> ServiceAccountKey:
    """Write a throw-away service-account key file whose ``token_uri`` is ``token_uri``."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_id = uuid.uuid4().hex
    email = f"{name}@bcw-test-project.iam.gserviceaccount.com"
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    path = directory / f"{name}-{key_id[:8]}.json"
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "bcw-test-project",
                "private_key_id": key_id,
                "private_key": private_pem,
                "client_email": email,
                "client_id": "100000000000000000001",
                "token_uri": token_uri,
            }
        )
    )
    path.chmod(0o600)
    return ServiceAccountKey(path, key_id, email, public_pem)


@dataclass(frozen=True)
class EntraCertificate:
    path: Path  # PEM: the private key, then the certificate (what azure-identity's CertificateCredential reads)
    certificate_pem: str  # what the application's registration in Entra holds


def make_entra_certificate(directory: Path, *, name: str = "bcw-app") -> EntraCertificate:
    """A throw-away self-signed certificate and its key, as a service principal's credential."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(private, hashes.SHA256())
    )
    certificate_pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    path = directory / f"{name}-{uuid.uuid4().hex[:8]}.pem"
    path.write_text(private_pem + certificate_pem)
    path.chmod(0o600)
    return EntraCertificate(path, certificate_pem)
