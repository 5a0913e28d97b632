"""Signatures: Standard Webhooks as OpenAI's SDK and the library read them, and Bedrock's shared header."""

from __future__ import annotations

import time

import pytest
from openai import OpenAI

from tests.webhooks.signed import RAW, WHSEC, openai_body, sign
from worker.webhooks import HeaderSecret, Refused, StandardWebhooks

OLD = "whsec_" + "b2xkLXNlY3JldC1mb3ItdGVzdHMtb25seS0zMi1ieXRlcw=="


def _refused(verifier: StandardWebhooks | HeaderSecret, body: bytes, headers: dict[str, str]) -> Refused:
    with pytest.raises(Refused) as caught:
        verifier.verify(body, headers)
    return caught.value


@pytest.mark.parametrize("dialect_is_openai", [True, False])
def test_a_whsec_secret_verifies_for_both_dialects(dialect_is_openai: bool) -> None:
    body = openai_body()
    headers = sign(WHSEC, body)
    verifier = StandardWebhooks([WHSEC.encode()], raw_without_prefix=dialect_is_openai)
    assert verifier.verify(body, headers) == headers["webhook-id"]


def test_an_openai_secret_without_the_prefix_is_its_raw_bytes_as_openais_sdk_reads_it() -> None:
    body = openai_body()
    headers = sign(RAW.encode(), body)  # the raw bytes as the HMAC key
    OpenAI(api_key="unused").webhooks.verify_signature(body, headers, secret=RAW)  # OpenAI's own reading agrees
    assert StandardWebhooks([RAW.encode()], raw_without_prefix=True).verify(body, headers)
    # The library's reading of the same text (base64) is another key: as Gemini's secret it does not verify.
    assert _refused(StandardWebhooks([RAW.encode()], raw_without_prefix=False), body, headers).result == "bad_signature"


def test_any_configured_secret_verifies_while_one_rotates() -> None:
    body = openai_body()
    verifier = StandardWebhooks([WHSEC.encode(), OLD.encode()], raw_without_prefix=True)
    assert verifier.verify(body, sign(OLD, body))
    assert verifier.verify(body, sign(WHSEC, body))


@pytest.mark.parametrize(
    ("change", "status", "result"),
    [
        ({"webhook-signature": "v1,AAAA"}, 401, "bad_signature"),
        ({"webhook-signature": "garbage"}, 401, "bad_signature"),
        ({"webhook-id": "wh_other"}, 401, "bad_signature"),  # the id is signed too
        ({"webhook-timestamp": "soon"}, 401, "bad_signature"),
        ({"webhook-timestamp": None}, 401, "bad_signature"),
    ],
)
def test_a_forged_or_incomplete_delivery_is_refused(change: dict[str, str | None], status: int, result: str) -> None:
    body = openai_body()
    headers = {k: v for k, v in {**sign(WHSEC, body), **change}.items() if v is not None}
    refused = _refused(StandardWebhooks([WHSEC.encode()], raw_without_prefix=True), body, headers)
    assert (refused.status, refused.result) == (status, result)


def test_a_changed_body_is_refused() -> None:
    headers = sign(WHSEC, openai_body("batch_a"))
    refused = _refused(StandardWebhooks([WHSEC.encode()], raw_without_prefix=True), openai_body("batch_b"), headers)
    assert refused.result == "bad_signature"


@pytest.mark.parametrize("offset", [-301, 301])
def test_a_delivery_outside_the_tolerance_is_stale_either_way(offset: int) -> None:
    body = openai_body()
    headers = sign(WHSEC, body, at=time.time() + offset)
    refused = _refused(StandardWebhooks([WHSEC.encode()], raw_without_prefix=True), body, headers)
    assert (refused.status, refused.result) == (401, "stale")
    assert StandardWebhooks([WHSEC.encode()], raw_without_prefix=True).verify(
        body, sign(WHSEC, body, at=time.time() + offset * 0.9)
    )


def test_bedrocks_header_must_hold_one_of_the_secrets() -> None:
    verifier = HeaderSecret("x-bcw-token", [b"new-token", b"old-token"])
    verifier.verify(b"{}", {"x-bcw-token": "old-token"})  # no Refused
    for headers in ({"x-bcw-token": "wrong"}, {"x-bcw-token": ""}, {}, {"x-other": "new-token"}):
        assert _refused(verifier, b"{}", headers).result == "bad_signature"
