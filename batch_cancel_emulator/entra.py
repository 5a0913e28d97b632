"""Microsoft Entra ID, emulated for real clients: azure-identity's own credentials get their tokens here.

Three endpoints, each the shape azure-identity (through MSAL or its managed-identity client) calls:

* ``GET /{tenant}/v2.0/.well-known/openid-configuration``: the tenant's OpenID configuration, which MSAL reads
  before its first token request to learn the token endpoint (``404`` for a tenant nobody registered).
* ``POST /{tenant}/oauth2/v2.0/token``: the client-credentials grant, with a client secret, a certificate's
  signed JWT assertion (``CertificateCredential``; verified with the registered certificate's public key, its
  audience the token endpoint, issuer and subject the client id), or a federated token as the assertion
  (``WorkloadIdentityCredential``: the projected Kubernetes service-account token, trusted when registered). The
  scope must be the Cognitive Services one. Errors are Entra's: ``invalid_client`` (401) for a wrong secret or an
  untrusted assertion, ``unauthorized_client`` (400) for an unknown application, ``invalid_scope`` (400).
* ``GET /metadata/identity/oauth2/token``: IMDS, the managed-identity endpoint (azure-identity's
  ``ManagedIdentityCredential`` calls it at ``AZURE_POD_IDENTITY_AUTHORITY_HOST`` when that is set), requiring
  ``Metadata: true``; a client id nobody assigned answers 400, as IMDS does.

MSAL insists on an https authority, so a test serves these on the emulator's TLS listener (``--tls-cert``); IMDS
is plain http, as on a VM. Every token issued lives ``lifetime_s`` (3600 s by default, about Entra's hour). The
Azure routes accept a bearer only if it is an unexpired token issued here; with ``required`` they refuse API keys
too (a resource with local authentication disabled). ``revoke`` forgets every token: the next request is a 401.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

__all__ = ["COGNITIVE_SERVICES", "EntraTokens"]

COGNITIVE_SERVICES = "https://cognitiveservices.azure.com/.default"
_RESOURCE = "https://cognitiveservices.azure.com"
_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_OPENID = re.compile(r"^/(?P<tenant>[A-Za-z0-9.-]{1,100})/v2\.0/\.well-known/openid-configuration$")
_TOKEN = re.compile(r"^/(?P<tenant>[A-Za-z0-9.-]{1,100})/oauth2/v2\.0/token$")
IMDS_PATH = "/metadata/identity/oauth2/token"
#: The managed identity with no client id: the system-assigned one.
SYSTEM_ASSIGNED = "system"


def is_entra_path(path: str) -> bool:
    return path == IMDS_PATH or _OPENID.match(path) is not None or _TOKEN.match(path) is not None


def _error(status: int, error: str, code: int, description: str) -> tuple[int, dict[str, Any]]:
    return status, {
        "error": error,
        "error_description": f"AADSTS{code}: {description}",
        "error_codes": [code],
        "timestamp": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
        "trace_id": "00000000-0000-0000-0000-000000000000",
        "correlation_id": "00000000-0000-0000-0000-000000000000",
    }


@dataclass
class EntraTokens:
    #: (tenant, client id) → its client secret, its certificate's public key (PEM), its trusted federated tokens
    client_secrets: dict[tuple[str, str], str] = field(default_factory=dict)
    certificates: dict[tuple[str, str], str] = field(default_factory=dict)
    federated: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    managed: set[str] = field(default_factory=set)  # managed identities assigned here: client ids, or "system"
    lifetime_s: float = 3600.0
    required: bool = False  # True: Azure routes refuse API keys (local authentication disabled)
    accept: bool = True  # False: Azure refuses even the tokens issued here (the identity lost its role)
    delay_s: float = 0.0  # how long the token and IMDS endpoints take to answer (a slow identity provider)
    tokens: dict[str, tuple[float, str]] = field(default_factory=dict)  # token → (monotonic expiry, identity)
    issued: int = 0
    refused: int = 0

    def tenants(self) -> set[str]:
        return {t for t, _ in (*self.client_secrets, *self.certificates, *self.federated)}

    def revoke(self) -> None:
        self.tokens.clear()

    def check(self, token: str) -> tuple[str | None, str | None]:
        """``(identity, None)`` for an issued, unexpired token; else ``(None, error kind)``."""
        issued = self.tokens.get(token)
        if issued is None or not self.accept or time.monotonic() >= issued[0]:
            return None, "bad_token"
        return issued[1], None

    def handle(
        self, method: str, path: str, query: bytes, headers: dict[bytes, bytes], *, body: bytes, base: str
    ) -> tuple[int, dict[str, Any], str]:
        """One request to an Entra path: ``(status, JSON answer, op)`` for the request log."""
        if path == IMDS_PATH:
            return (*self._counted(self._imds(method, query, headers)), "imds")
        match = _OPENID.match(path)
        if match is not None:
            return (*self._openid(method, match["tenant"], base), "openid")
        match = _TOKEN.match(path)
        assert match is not None, path
        if method != "POST":
            return (*_error(405, "invalid_request", 900561, "The endpoint only accepts POST requests."), "token")
        endpoint = f"{base}/{match['tenant']}/oauth2/v2.0/token"
        return (*self._counted(self._token(match["tenant"], body, endpoint)), "token")

    def _counted(self, answer: tuple[int, dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        if answer[0] == 200:
            self.issued += 1
        else:
            self.refused += 1
        return answer

    def _issue(self, identity: str) -> str:
        token = "eyJ0eXAiOiJKV1QiLCJhbGciOiJub25lIn0.emulator-entra." + secrets.token_urlsafe(24)
        self.tokens[token] = (time.monotonic() + self.lifetime_s, identity)
        return token

    def _openid(self, method: str, tenant: str, base: str) -> tuple[int, dict[str, Any]]:
        if method != "GET":
            return _error(405, "invalid_request", 900561, "The endpoint only accepts GET requests.")
        if tenant not in self.tenants():
            return _error(400, "invalid_tenant", 90002, f"Tenant '{tenant}' not found.")
        root = f"{base}/{tenant}"
        return 200, {
            "token_endpoint": f"{root}/oauth2/v2.0/token",
            "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
            "issuer": f"{root}/v2.0",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "tenant_region_scope": "EU",
        }

    def _token(self, tenant: str, body: bytes, endpoint: str) -> tuple[int, dict[str, Any]]:  # noqa: PLR0911 - one answer per refusal
        form = {k: v[0] for k, v in parse_qs(body.decode("latin-1")).items()}
        if form.get("grant_type") != "client_credentials":
            return _error(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.")
        client = form.get("client_id", "")
        known = (tenant, client)
        if known not in self.client_secrets and known not in self.certificates and known not in self.federated:
            return _error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client}' was not found in the directory '{tenant}'.",
            )
        if COGNITIVE_SERVICES not in form.get("scope", "").split():
            return _error(
                400, "invalid_scope", 70011, "The provided value for the input parameter 'scope' is not valid."
            )
        if "client_secret" in form:
            expected = self.client_secrets.get(known)
            if expected is None or not hmac.compare_digest(expected.encode(), form["client_secret"].encode()):
                return _error(401, "invalid_client", 7000215, "Invalid client secret provided.")
        elif form.get("client_assertion_type") == _ASSERTION_TYPE:
            if not self._assertion_trusted(known, form.get("client_assertion", ""), endpoint):
                return _error(
                    401,
                    "invalid_client",
                    700213,
                    "No matching federated identity record found for presented assertion.",
                )
        else:
            return _error(
                401, "invalid_client", 7000218, "The request body must contain client_assertion or client_secret."
            )
        token = self._issue(f"app:{tenant}/{client}")
        lifetime = int(self.lifetime_s)
        return 200, {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": token}

    def _assertion_trusted(self, known: tuple[str, str], assertion: str, endpoint: str) -> bool:
        """A federated token registered for the client, or a JWT signed with its registered certificate."""
        if any(hmac.compare_digest(assertion.encode(), t.encode()) for t in self.federated.get(known, ())):
            return True
        public_pem = self.certificates.get(known)
        if public_pem is None:
            return False
        import jwt  # PyJWT, which MSAL itself depends on: present wherever azure-identity is

        try:
            claims = jwt.decode(
                assertion, public_pem, algorithms=["RS256", "PS256"], audience=endpoint, options={"require": ["exp"]}
            )
        except jwt.PyJWTError:
            return False
        return bool(claims.get("iss") == known[1] and claims.get("sub") == known[1])

    def _imds(self, method: str, query: bytes, headers: dict[bytes, bytes]) -> tuple[int, dict[str, Any]]:
        params = {k: v[0] for k, v in parse_qs(query.decode("latin-1")).items()}
        if method != "GET" or headers.get(b"metadata", b"").lower() != b"true":
            return 400, {"error": "invalid_request", "error_description": "Required metadata header not specified"}
        if params.get("resource", "").rstrip("/") != _RESOURCE:
            return 400, {"error": "invalid_resource", "error_description": "AADSTS500011: resource not found"}
        identity = params.get("client_id") or params.get("msi_res_id") or SYSTEM_ASSIGNED
        if identity not in self.managed:
            return 400, {"error": "invalid_request", "error_description": "Identity not found"}
        token = self._issue(f"managed:{identity}")
        expires_on = int(time.time() + self.lifetime_s)
        return 200, {
            "access_token": token,
            "client_id": identity,
            "expires_in": str(int(self.lifetime_s)),
            "expires_on": str(expires_on),
            "ext_expires_in": str(int(self.lifetime_s)),
            "not_before": str(int(time.time())),
            "resource": _RESOURCE,
            "token_type": "Bearer",
        }

    @staticmethod
    def encode(answer: dict[str, Any]) -> bytes:
        return json.dumps(answer).encode()
