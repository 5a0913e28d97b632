"""Throw-away cloud credentials for ``make dev``: the Vertex AI and Bedrock accounts of providers.dev.yaml.

Vertex AI: a service-account key file generated at start (a fresh RSA key, never a real credential), its
``token_uri`` the emulator's token endpoint, whose public half the emulator is told to trust; google-auth then runs
its own service-account flow against it. Bedrock: the emulator's test AWS keys in the worker's environment (the
standard credential chain), signed with SigV4 as in production. Nothing here can reach a real cloud account: the
base URLs in providers.dev.yaml point at the emulator.
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from batch_cancel_emulator.cloud_auth import DEFAULT_AWS_KEY

__all__ = ["KEY_FILE_PLACEHOLDER", "aws_env", "dev_providers_file", "write_trusted_service_account_key"]

#: What providers.dev.yaml names as the Vertex account's key file; replaced by the generated file's path.
KEY_FILE_PLACEHOLDER = "DEV_VERTEX_KEY_FILE"
#: The emulator's address providers.dev.yaml is written for.
DEFAULT_EMULATOR_URL = "http://127.0.0.1:8090"


def write_trusted_service_account_key(directory: Path, emulator_url: str) -> Path:
    """A service-account key file in ``directory`` that the emulator at ``emulator_url`` trusts."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_id = uuid.uuid4().hex
    email = "bcw-dev@bcw-dev.iam.gserviceaccount.com"
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key = {
        "type": "service_account",
        "project_id": "bcw-dev",
        "private_key_id": key_id,
        "private_key": pem,
        "client_email": email,
        "client_id": "1",
        "token_uri": f"{emulator_url}/google/token",
    }
    path = directory / "vertex-service-account.json"
    path.touch(mode=0o600)
    path.write_text(json.dumps(key))
    body = json.dumps({"key_id": key_id, "client_email": email, "public_key_pem": public.decode()}).encode()
    url = f"{emulator_url}/_admin/google/keys"
    request = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})  # noqa: S310
    urllib.request.urlopen(request, timeout=5).close()  # noqa: S310 - the local emulator's admin API, http
    return path


def dev_providers_file(template: Path, key_file: Path, emulator_url: str, directory: Path) -> Path:
    """A copy of ``template`` (providers.dev.yaml) naming ``key_file`` as the Vertex account's key and pointing at
    the emulator on ``emulator_url`` (the template's base URLs use the default port)."""
    text = template.read_text().replace(KEY_FILE_PLACEHOLDER, str(key_file))
    path = directory / "providers.yaml"
    path.write_text(text.replace(DEFAULT_EMULATOR_URL + "/", emulator_url + "/"))
    return path


def aws_env() -> dict[str, str]:
    """The emulator's test AWS keys for the credential chain; no profile, no instance metadata."""
    return {
        "AWS_ACCESS_KEY_ID": DEFAULT_AWS_KEY[0],
        "AWS_SECRET_ACCESS_KEY": DEFAULT_AWS_KEY[1],
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
