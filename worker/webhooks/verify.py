"""Is a delivery from the provider? Standard Webhooks signatures (openai, gemini) or a shared header (bedrock).

OpenAI and Gemini sign with Standard Webhooks v1: HMAC-SHA256 over ``{webhook-id}.{webhook-timestamp}.{body}``
with the secret, base64 in ``webhook-signature`` (space-separated ``v1,…`` entries, so a sender can sign with
two secrets while one rotates). The maintained ``standardwebhooks`` library checks the signature. Two things
are decided here rather than left to it:

* **The timestamp first**, with the tolerance both SDKs use (300 s, either way), so that a stale or future
  delivery is told apart from a forged one in the metrics (``stale`` versus ``bad_signature``).
* **OpenAI's secrets.** OpenAI's SDK base64-decodes a secret only when it carries the ``whsec_`` prefix and
  otherwise uses its raw bytes; the library always base64-decodes a text secret. So for OpenAI a secret
  without the prefix is given to the library as bytes, which it uses raw — what OpenAI itself signs with.

Bedrock's events come through an EventBridge API destination, whose connection sends an API key in a header of
the operator's choosing; it is compared in constant time with every configured secret.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Mapping, Sequence

from standardwebhooks import Webhook, WebhookVerificationError

__all__ = ["TOLERANCE_S", "HeaderSecret", "Refused", "StandardWebhooks", "Verifier"]

#: How far a delivery's ``webhook-timestamp`` may be from now, either way (OpenAI's SDK and the library agree).
TOLERANCE_S = 300
_PREFIX = b"whsec_"


class Refused(Exception):
    """The delivery is not answered with 2xx: ``status`` for the provider, ``result`` for the metrics."""

    def __init__(self, status: int, result: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.result = result


class Verifier:
    """Checks one route's deliveries (``headers`` with lower-case names); returns the delivery id the headers
    carry, or None when only the payload has one (EventBridge's event id)."""

    def verify(self, body: bytes, headers: Mapping[str, str]) -> str | None:
        raise NotImplementedError


class StandardWebhooks(Verifier):
    """Standard Webhooks v1 with any of ``secrets``; ``raw_without_prefix``: OpenAI's reading of a secret."""

    def __init__(
        self, secrets: Sequence[bytes], *, raw_without_prefix: bool, clock: Callable[[], float] = time.time
    ) -> None:
        if not secrets:
            raise ValueError("no secret")
        self._hooks = [Webhook(_key(s, raw_without_prefix)) for s in secrets]
        self._now = clock

    def verify(self, body: bytes, headers: Mapping[str, str]) -> str:
        delivery_id = headers.get("webhook-id")
        timestamp = headers.get("webhook-timestamp")
        if not delivery_id or not timestamp or not headers.get("webhook-signature"):
            raise Refused(401, "bad_signature", "missing webhook-id, webhook-timestamp or webhook-signature")
        try:
            sent = int(timestamp)
        except ValueError:
            raise Refused(401, "bad_signature", "webhook-timestamp is not Unix seconds") from None
        if abs(self._now() - sent) > TOLERANCE_S:
            raise Refused(401, "stale", f"webhook-timestamp is more than {TOLERANCE_S} s from now")
        wanted = {k: v for k, v in headers.items() if k in ("webhook-id", "webhook-timestamp", "webhook-signature")}
        for hook in self._hooks:
            try:
                hook.verify(body, wanted, json_parse=False)
            except (WebhookVerificationError, ValueError):  # ValueError: undecodable body, malformed header
                continue
            return delivery_id
        raise Refused(401, "bad_signature", "no signature matches a configured secret")


def _key(secret: bytes, raw_without_prefix: bool) -> str | bytes:
    """What the library takes: text (``whsec_`` + base64, decoded by it), or bytes it uses as they are."""
    if secret.startswith(_PREFIX) or not raw_without_prefix:
        return secret.decode()
    return secret


class HeaderSecret(Verifier):
    """An EventBridge connection's API key in ``header``, compared in constant time with each secret."""

    def __init__(self, header: str, secrets: Sequence[bytes]) -> None:
        if not secrets:
            raise ValueError("no secret")
        self._header = header.lower()
        self._secrets = list(secrets)

    def verify(self, body: bytes, headers: Mapping[str, str]) -> None:
        given = headers.get(self._header, "").encode()
        # Every secret is compared, matched or not, so the time taken says nothing about which one was close.
        matched = [hmac.compare_digest(given, secret) for secret in self._secrets]
        if not given or not any(matched):
            raise Refused(401, "bad_signature", f"{self._header} does not hold a configured secret")
