"""The emulator's cloud credentials, checked for real: Google OAuth2 access tokens and AWS SigV4 signatures.

Google: ``POST /google/token`` is an OAuth2 token endpoint for the service-account flow (RFC 7523 JWT bearer
grant), the one google-auth runs with a key file whose ``token_uri`` points here. A test registers the public
half of a throw-away key (``/_admin/google/keys``); the endpoint verifies the assertion's RS256 signature with
it (google-auth's own JWT verifier), its issuer, audience (Google's token endpoint, or this one), scope and
times, and issues an opaque access token living ``lifetime_s`` (``/_admin/google/tokens``; default 3600 s as
Google's). Vertex
requests must carry an issued, unexpired token; ``/_admin/google/revoke`` forgets every token, as a revocation
or a server-side expiry the client did not see coming.

AWS: ``POST /aws/sts`` is STS's ``AssumeRoleWithWebIdentity``, what botocore's credential chain calls in an IRSA
pod (``AWS_ROLE_ARN``, ``AWS_WEB_IDENTITY_TOKEN_FILE``, with ``AWS_ENDPOINT_URL_STS`` pointing here): a registered
web-identity token (``/_admin/aws/web_identity``) buys temporary credentials living ``session_lifetime_s``, which
Bedrock routes accept only with their session token and only until they expire. A Bedrock request's
``Authorization: AWS4-HMAC-SHA256 …`` is verified by recomputing the signature with botocore's own SigV4 signer
over the request as received (method, raw path, query, the signed headers, the body) with the secret of the
access key it names (``/_admin/aws/credentials`` adds one). The scope's service must be
``bedrock`` and its date the request's; ``x-amz-date`` may be at most 15 minutes off, as AWS allows.

Both libraries are imported on first use, so an emulator without them still serves every other dialect.
"""

from __future__ import annotations

import hmac
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

__all__ = ["DEFAULT_AWS_KEY", "AwsKeys", "GoogleTokens"]

#: The access key (id, secret) the emulator knows from the start; tests may add others.
DEFAULT_AWS_KEY = ("AKIAEMULATOR00000001", "emulator/secret+access+key/000000000000")
_JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
#: The audience google-auth's service-account flow writes whatever ``token_uri`` it posts to (Google's own).
_GOOGLE_AUDIENCE = "https://oauth2.googleapis.com/token"
_SKEW_S = 15 * 60
_AUTH = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<akid>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request,"
    r"\s*SignedHeaders=(?P<signed>[a-z0-9;-]+),\s*Signature=(?P<signature>[0-9a-f]{64})$"
)


def _oauth_error(error: str, description: str) -> tuple[int, dict[str, str]]:
    return 400, {"error": error, "error_description": description}


@dataclass
class GoogleTokens:
    keys: dict[str, tuple[str, str]] = field(default_factory=dict)  # key id → (client email, public key PEM)
    lifetime_s: float = 3600.0
    accept: bool = True  # False: the API refuses even the tokens issued here (a disabled account, a lost grant)
    tokens: dict[str, tuple[float, str]] = field(default_factory=dict)  # token → (monotonic expiry, client email)
    issued: int = 0
    refused: int = 0

    def register(self, key_id: str, client_email: str, public_key_pem: str) -> None:
        self.keys[key_id] = (client_email, public_key_pem)

    def revoke(self) -> None:
        self.tokens.clear()

    def check(self, token: str | None) -> tuple[str | None, str | None]:
        """``(service account, None)`` for an issued, unexpired access token; else ``(None, error kind)``."""
        issued = self.tokens.get(token) if token is not None else None
        if issued is None or not self.accept:
            return None, "unauthorized"
        if time.monotonic() >= issued[0]:
            return None, "token_expired"
        return issued[1], None

    def exchange(self, form_body: bytes, endpoint_url: str) -> tuple[int, dict[str, Any]]:
        """The token endpoint: a JWT-bearer grant in, an access token (or an RFC 6749 error) out."""
        status, body = self._exchange(form_body, endpoint_url)
        if status == 200:
            self.issued += 1
        else:
            self.refused += 1
        return status, body

    def _exchange(self, form_body: bytes, endpoint_url: str) -> tuple[int, dict[str, Any]]:  # noqa: PLR0911 - one answer per RFC 6749 error
        from google.auth import exceptions, jwt

        form = {k: v[0] for k, v in parse_qs(form_body.decode("latin-1")).items()}
        if form.get("grant_type") != _JWT_BEARER:
            return _oauth_error("unsupported_grant_type", "only the JWT bearer grant is emulated")
        assertion = form.get("assertion", "")
        try:
            header = jwt.decode_header(assertion)  # type: ignore[no-untyped-call]
        except (ValueError, exceptions.GoogleAuthError):
            return _oauth_error("invalid_request", "assertion is not a JWT")
        known = self.keys.get(str(header.get("kid")))
        if known is None:
            return _oauth_error("invalid_grant", "Invalid JWT Signature.")  # Google's words for an unknown key
        email, public_pem = known
        try:
            claims = jwt.decode(  # type: ignore[no-untyped-call]
                assertion, certs={str(header["kid"]): public_pem}, audience=[_GOOGLE_AUDIENCE, endpoint_url]
            )
        except (ValueError, exceptions.GoogleAuthError) as exc:
            return _oauth_error("invalid_grant", f"Invalid JWT: {exc}")
        if claims.get("iss") != email:
            return _oauth_error("invalid_grant", "Invalid JWT: iss is not the key's service account")
        if _CLOUD_PLATFORM not in str(claims.get("scope", "")).split():
            return _oauth_error("invalid_scope", "the cloud-platform scope is required")
        token = "ya29.emulator-" + secrets.token_urlsafe(24)
        self.tokens[token] = (time.monotonic() + self.lifetime_s, email)
        return 200, {"access_token": token, "expires_in": _whole(self.lifetime_s), "token_type": "Bearer"}


@dataclass
class AwsKeys:
    secrets: dict[str, str] = field(default_factory=lambda: dict([DEFAULT_AWS_KEY]))
    #: temporary credentials STS issued: access key id → (session token, time.monotonic() they expire)
    sessions: dict[str, tuple[str, float]] = field(default_factory=dict)
    #: web-identity tokens (what EKS projects into an IRSA pod) → the role they may assume
    web_identities: dict[str, str] = field(default_factory=dict)
    session_lifetime_s: float = 3600.0
    verified: int = 0
    refused: int = 0
    assumed: int = 0

    def add(self, access_key_id: str, secret_access_key: str) -> None:
        self.secrets[access_key_id] = secret_access_key

    def assume_role_with_web_identity(self, form_body: bytes) -> tuple[int, bytes]:
        """STS ``AssumeRoleWithWebIdentity`` (query protocol, XML answer), as botocore's IRSA provider calls it."""
        form = {k: v[0] for k, v in parse_qs(form_body.decode("latin-1")).items()}
        if form.get("Action") != "AssumeRoleWithWebIdentity":
            return _sts_error(400, "InvalidAction", "only AssumeRoleWithWebIdentity is emulated")
        role = self.web_identities.get(form.get("WebIdentityToken", ""))
        if role is None or role != form.get("RoleArn"):
            return _sts_error(400, "InvalidIdentityToken", "The web identity token is not valid for this role.")
        access_key_id = "ASIA" + secrets.token_hex(8).upper()
        secret, token = secrets.token_urlsafe(30), "IQoJemulator" + secrets.token_urlsafe(40)
        self.secrets[access_key_id] = secret
        self.sessions[access_key_id] = (token, time.monotonic() + self.session_lifetime_s)
        self.assumed += 1
        expires = datetime.fromtimestamp(time.time() + self.session_lifetime_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        session = form.get("RoleSessionName", "bcw")
        body = (
            '<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
            "<AssumeRoleWithWebIdentityResult><Credentials>"
            f"<AccessKeyId>{access_key_id}</AccessKeyId><SecretAccessKey>{secret}</SecretAccessKey>"
            f"<SessionToken>{token}</SessionToken><Expiration>{expires}</Expiration></Credentials>"
            "<SubjectFromWebIdentityToken>system:serviceaccount:bcw:batch-cancel-worker</SubjectFromWebIdentityToken>"
            f"<AssumedRoleUser><Arn>{role.replace(':iam::', ':sts::').replace(':role/', ':assumed-role/')}/{session}"
            f"</Arn><AssumedRoleId>AROAEMULATOR:{session}</AssumedRoleId></AssumedRoleUser>"
            "</AssumeRoleWithWebIdentityResult>"
            "<ResponseMetadata><RequestId>emulator</RequestId></ResponseMetadata>"
            "</AssumeRoleWithWebIdentityResponse>"
        )
        return 200, body.encode()

    def check(
        self, method: str, raw_path: str, query: str, headers: list[tuple[bytes, bytes]], *, body: bytes, service: str
    ) -> tuple[str | None, str | None]:
        """``(region, None)`` for a valid signature; ``(None, error kind)`` for anything else."""
        region, problem = self._check(method, raw_path, query, headers, body=body, service=service)
        if problem is None:
            self.verified += 1
        else:
            self.refused += 1
        return region, problem

    def _check(  # noqa: PLR0911 - one answer per way a signature can be wrong, in the order AWS checks
        self, method: str, raw_path: str, query: str, headers: list[tuple[bytes, bytes]], *, body: bytes, service: str
    ) -> tuple[str | None, str | None]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        values: dict[str, list[str]] = {}
        for name, value in headers:
            values.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
        authorization = (values.get("authorization") or [""])[0]
        match = _AUTH.match(authorization)
        if match is None:
            return None, "unauthorized"
        secret = self.secrets.get(match["akid"])
        if secret is None:
            return None, "unknown_key"
        session = self.sessions.get(match["akid"])
        if session is not None:  # temporary credentials: only with their own token, and only until they expire
            if (values.get("x-amz-security-token") or [""])[0] != session[0]:
                return None, "unknown_key"
            if time.monotonic() >= session[1]:
                return None, "expired_token"
        amz_date = (values.get("x-amz-date") or [""])[0]
        if match["service"] != service or match["date"] != amz_date[:8]:
            return None, "bad_signature"
        try:
            sent = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            return None, "bad_signature"
        if abs((datetime.now(UTC) - sent).total_seconds()) > _SKEW_S:
            return None, "signature_expired"
        signed_names = match["signed"].split(";")
        if "host" not in signed_names or any(name not in values for name in signed_names):
            return None, "bad_signature"
        host = values["host"][0]
        url = f"http://{host}{raw_path}" + (f"?{query}" if query else "")
        request = AWSRequest(
            method=method, url=url, data=body, headers={name: ",".join(values[name]) for name in signed_names}
        )
        request.context["timestamp"] = amz_date
        token = values["x-amz-security-token"][0] if "x-amz-security-token" in values else None
        signer = SigV4Auth(Credentials(match["akid"], secret, token), service, match["region"])
        if signer.signed_headers(signer.headers_to_sign(request)) != match["signed"]:
            return None, "bad_signature"
        expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
        if not hmac.compare_digest(expected, match["signature"]):
            return None, "bad_signature"
        return match["region"], None


def _sts_error(status: int, code: str, message: str) -> tuple[int, bytes]:
    body = (
        '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>'
        f"<Code>{code}</Code><Message>{message}</Message></Error><RequestId>emulator</RequestId></ErrorResponse>"
    )
    return status, body.encode()


def _whole(value: float) -> int | float:
    return int(value) if value == int(value) else value
