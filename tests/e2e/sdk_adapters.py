"""Each provider's official SDK, pointed at the emulator: its own public calls, models and exceptions.

An adapter makes one cancel or retrieve through the SDK's public API and hands back what the SDK parsed plus
the raw body, so a test can also validate that body *strictly* against the SDK's model type (the Stainless
SDKs build models without validation, which would let almost any JSON through). Retries are off in every
SDK: each emulator answer is seen exactly as sent. xAI's SDK speaks gRPC only, so its adapter fetches the
REST JSON with httpx and parses it into the SDK's own protobuf ``Batch`` message, unknown fields refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anthropic
import groq
import httpx
import httpx2
import mistralai.client
import openai
import pydantic
import together
from anthropic.types import ErrorResponse as AnthropicErrorResponse
from anthropic.types.messages import MessageBatch
from google.protobuf import json_format
from mistralai.client import errors as mistral_errors
from mistralai.client.models import BatchJob
from xai_sdk.proto import batch_pb2

from worker.emulator.testing import Emulator

__all__ = ["ADAPTERS", "Adapter", "Answer", "SdkError"]


@dataclass(frozen=True)
class Answer:
    parsed: Any  # the SDK's own model object
    raw: bytes


@dataclass(frozen=True)
class SdkError(Exception):
    """What an SDK raised, reduced to what the tests compare: its class, the HTTP status, the body."""

    sdk_class: type[BaseException]
    http_status: int | None  # None: a connection error
    body: bytes


Call = Callable[[str], Answer]


@dataclass(frozen=True)
class Adapter:
    name: str
    dialect: str  # the emulator dialect it talks to
    cancel: Call
    retrieve: Call
    strict_problems: Callable[[bytes], set[str]]  # top-level fields the SDK's model type refuses
    batch_id_of: Callable[[Any], str]


def _pydantic_problems(model: type[pydantic.BaseModel]) -> Callable[[bytes], set[str]]:
    def problems(raw: bytes) -> set[str]:
        try:
            model.model_validate_json(raw)
        except pydantic.ValidationError as exc:
            return {str(err["loc"][0]) for err in exc.errors()}
        return set()

    return problems


def _stainless(call: Callable[[], Any], module: Any) -> Answer:
    """Run a ``with_raw_response`` call of a Stainless-built SDK (openai, anthropic, together, groq)."""
    try:
        raw = call()
    except module.APIStatusError as exc:
        raise SdkError(type(exc), exc.status_code, exc.response.content) from exc
    except module.APIConnectionError as exc:
        raise SdkError(type(exc), None, b"") from exc
    return Answer(raw.parse(), raw.http_response.content)


def _openai(emu: Emulator, dialect: str, key: str) -> Adapter:
    client = openai.OpenAI(api_key=key, base_url=emu.base_url(dialect), max_retries=0)
    return Adapter(
        f"openai-sdk:{dialect}",
        dialect,
        lambda b: _stainless(lambda: client.batches.with_raw_response.cancel(b), openai),
        lambda b: _stainless(lambda: client.batches.with_raw_response.retrieve(b), openai),
        _pydantic_problems(openai.types.Batch),
        lambda m: str(m.id),
    )


def _azure_classic(emu: Emulator, key: str) -> Adapter:
    client = openai.AzureOpenAI(api_key=key, azure_endpoint=emu.url + "/azure", api_version="2024-10-21", max_retries=0)
    return Adapter(
        "openai-sdk:AzureOpenAI",
        "azure",
        lambda b: _stainless(lambda: client.batches.with_raw_response.cancel(b), openai),
        lambda b: _stainless(lambda: client.batches.with_raw_response.retrieve(b), openai),
        _pydantic_problems(openai.types.Batch),
        lambda m: str(m.id),
    )


def _azure_v1(emu: Emulator, key: str) -> Adapter:
    # The v1 API is used with the plain OpenAI client; the key travels in ``api-key``, as the worker sends it.
    client = openai.OpenAI(
        api_key="unused", base_url=emu.base_url("azure"), default_headers={"api-key": key}, max_retries=0
    )
    return Adapter(
        "openai-sdk:azure-v1",
        "azure",
        lambda b: _stainless(lambda: client.batches.with_raw_response.cancel(b), openai),
        lambda b: _stainless(lambda: client.batches.with_raw_response.retrieve(b), openai),
        _pydantic_problems(openai.types.Batch),
        lambda m: str(m.id),
    )


def _groq(emu: Emulator, key: str) -> Adapter:
    # Groq's own paths are /openai/v1/batches: exactly the emulator's OpenAI dialect at its root.
    client = groq.Groq(api_key=key, base_url=emu.url, max_retries=0)
    return Adapter(
        "groq-sdk",
        "openai",
        lambda b: _stainless(lambda: client.batches.with_raw_response.cancel(b), groq),
        lambda b: _stainless(lambda: client.batches.with_raw_response.retrieve(b), groq),
        _pydantic_problems(groq.types.BatchRetrieveResponse),
        lambda m: str(m.id),
    )


def _anthropic(emu: Emulator, key: str) -> Adapter:
    client = anthropic.Anthropic(api_key=key, base_url=emu.url + "/anthropic", max_retries=0)
    batches = client.messages.batches
    return Adapter(
        "anthropic-sdk",
        "anthropic",
        lambda b: _stainless(lambda: batches.with_raw_response.cancel(b), anthropic),
        lambda b: _stainless(lambda: batches.with_raw_response.retrieve(b), anthropic),
        _pydantic_problems(MessageBatch),
        lambda m: str(m.id),
    )


def _together(emu: Emulator, key: str) -> Adapter:
    client = together.Together(api_key=key, base_url=emu.url + "/together", max_retries=0)
    return Adapter(
        "together-sdk",
        "together",
        lambda b: _stainless(lambda: client.batches.with_raw_response.cancel(b), together),
        lambda b: _stainless(lambda: client.batches.with_raw_response.retrieve(b), together),
        _pydantic_problems(together.types.BatchJob),
        lambda m: str(m.id),
    )


def _mistral_call(call: Callable[[], BatchJob]) -> Answer:
    """mistralai validates every answer strictly into its models itself, and keeps no raw body on success."""
    try:
        job = call()
    except mistral_errors.MistralError as exc:
        raise SdkError(type(exc), exc.status_code, exc.body.encode()) from exc
    except httpx2.TransportError as exc:  # mistralai's transport is the httpx2 fork
        raise SdkError(type(exc), None, b"") from exc
    return Answer(job, job.model_dump_json(by_alias=True).encode())


def _mistral(emu: Emulator, key: str) -> Adapter:
    client = mistralai.client.Mistral(api_key=key, server_url=emu.url + "/mistral")
    return Adapter(
        "mistralai-sdk",
        "mistral",
        lambda b: _mistral_call(lambda: client.batch.jobs.cancel(job_id=b)),
        lambda b: _mistral_call(lambda: client.batch.jobs.get(job_id=b)),
        _pydantic_problems(BatchJob),
        lambda m: str(m.id),
    )


def _xai_call(http: httpx.Client, method: str, path: str) -> Answer:
    try:
        response = http.request(method, path)
    except httpx.TransportError as exc:
        raise SdkError(type(exc), None, b"") from exc
    if response.status_code >= 400:
        raise SdkError(httpx.HTTPStatusError, response.status_code, response.content)
    message = json_format.Parse(response.content, batch_pb2.Batch(), ignore_unknown_fields=False)
    return Answer(message, response.content)


def _xai_problems(raw: bytes) -> set[str]:
    try:
        json_format.Parse(raw, batch_pb2.Batch(), ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        return {str(exc)}
    return set()


def _xai(emu: Emulator, key: str) -> Adapter:
    http = httpx.Client(base_url=emu.base_url("xai"), headers={"Authorization": f"Bearer {key}"}, trust_env=False)
    return Adapter(
        "xai-sdk:proto",
        "xai",
        lambda b: _xai_call(http, "POST", f"/batches/{b}:cancel"),
        lambda b: _xai_call(http, "GET", f"/batches/{b}"),
        _xai_problems,
        lambda m: str(m.batch_id),
    )


#: name → factory(emulator, key); the four existing dialects are all checked with the openai SDK.
ADAPTERS: dict[str, Callable[[Emulator, str], Adapter]] = {
    "openai-sdk:openai": lambda e, k: _openai(e, "openai", k),
    "openai-sdk:siliconflow": lambda e, k: _openai(e, "siliconflow", k),
    "openai-sdk:dashscope": lambda e, k: _openai(e, "dashscope", k),
    "openai-sdk:deepinfra": lambda e, k: _openai(e, "deepinfra", k),
    "openai-sdk:AzureOpenAI": _azure_classic,
    "openai-sdk:azure-v1": _azure_v1,
    "groq-sdk": _groq,
    "anthropic-sdk": _anthropic,
    "mistralai-sdk": _mistral,
    "together-sdk": _together,
    "xai-sdk:proto": _xai,
}

#: The SDK's own exception class for an HTTP status, for the Stainless-built SDKs.
STAINLESS_ERRORS = {400: "BadRequestError", 401: "AuthenticationError", 404: "NotFoundError", 409: "ConflictError"}
STAINLESS_ERRORS |= {429: "RateLimitError", 500: "InternalServerError", 502: "InternalServerError"}
STAINLESS_ERRORS |= {503: "InternalServerError", 529: "OverloadedError"}


def anthropic_error_problems(raw: bytes) -> set[str]:
    """Anthropic's error bodies against the SDK's ``ErrorResponse`` (a union keyed by ``error.type``)."""
    return _pydantic_problems(AnthropicErrorResponse)(raw)
