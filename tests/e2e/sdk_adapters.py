"""Each provider's official SDK, pointed at the emulator: its own public calls, models and exceptions.

An adapter makes one cancel or retrieve through the SDK's public API and hands back what the SDK parsed plus
the raw body, so a test can also validate that body *strictly* against the SDK's model type (the Stainless
SDKs build models without validation, which would let almost any JSON through). Retries are off in every
SDK: each emulator answer is seen exactly as sent. xAI's SDK speaks gRPC only, so its adapter fetches the
REST JSON with httpx and parses it into the SDK's own protobuf ``Batch`` message, unknown fields refused.

The cloud providers: google-genai for the Gemini API and for Vertex AI
(its Vertex mode), google-cloud-aiplatform's own ``JobServiceClient`` (REST transport) for Vertex AI, both
with google-auth credentials from the emulator's token endpoint, and botocore's own Bedrock client.
Strictness comes from the Gemini batch resource's documented fields, Vertex AI's discovery document (plus
aiplatform's proto parse with unknown fields refused) and botocore's service model, because those SDKs
accept an unknown field silently.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import anthropic
import botocore.config
import botocore.exceptions
import botocore.session
import google.auth.credentials
import groq
import httpx
import httpx2
import mistralai.client
import openai
import pydantic
import requests
import together
from anthropic.types import ErrorResponse as AnthropicErrorResponse
from anthropic.types.messages import MessageBatch
from google import genai
from google.api_core import exceptions as google_exceptions
from google.cloud import aiplatform_v1
from google.cloud.aiplatform_v1.services.job_service.transports.rest import JobServiceRestTransport
from google.genai import _transformers as genai_transformers
from google.genai import batches as genai_batches
from google.genai import errors as genai_errors
from google.genai import types as genai_types
from google.oauth2 import service_account
from google.protobuf import json_format
from jsonschema import Draft7Validator  # type: ignore[import-untyped]  # no stubs in dev deps
from mistralai.client import errors as mistral_errors
from mistralai.client.models import BatchJob
from xai_sdk.proto import batch_pb2

from batch_cancel_emulator.testing import DEFAULT_AWS_KEY, DEFAULT_KEY, Emulator
from tests.support.cloud import make_service_account_key

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
    #: False: a cancel answers with no batch (the SDK's cancel returns None); the raw answer is then ``empty_cancel``
    cancel_answers_batch: bool = True
    empty_cancel: bytes = b"{}"
    #: An id in the provider's own form that no batch has (the SDKs refuse some forms before sending).
    absent_id: str = "batch_nobody_made"
    #: What a refused credential answers (Gemini: 400 API_KEY_INVALID; AWS: 403).
    unauthorized_status: int = 401


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


# --- the cloud providers --------------------------------------------------------------------------------------------


def _capturing_http() -> tuple[httpx.Client, list[bytes]]:
    """An httpx client for google-genai that keeps every answer's raw body (the SDK keeps only its models)."""
    bodies: list[bytes] = []

    def keep(response: httpx.Response) -> None:
        response.read()
        bodies.append(response.content)

    return httpx.Client(event_hooks={"response": [keep]}, trust_env=False), bodies


def _genai_call(call: Callable[[], Any], bodies: list[bytes]) -> Answer:
    try:
        parsed = call()
    except genai_errors.APIError as exc:
        raise SdkError(type(exc), exc.code, json.dumps(exc.details).encode()) from exc
    except httpx.TransportError as exc:
        raise SdkError(type(exc), None, b"") from exc
    return Answer(parsed, bodies[-1])


#: The Gemini API's batch resource (GenerateContentBatch, ai.google.dev/api/batch-mode) and its Operation envelope;
#: google-genai reads a few of these fields and drops the rest, so the fields are held to this list here.
_GEMINI_OPERATION = {"name", "metadata", "done", "error", "response"}
_GEMINI_BATCH = {
    "@type", "name", "model", "displayName", "inputConfig", "output", "createTime", "endTime", "updateTime",
    "batchStats", "state", "priority",
}  # fmt: skip
_GEMINI_STATS = {"requestCount", "successfulRequestCount", "failedRequestCount", "pendingRequestCount"}


def _gemini_problems(raw: bytes) -> set[str]:
    """Unknown envelope/batch fields, counts that are not int64 strings, and what genai's own model refuses."""
    body = json.loads(raw)
    problems = {f for f in body if f not in _GEMINI_OPERATION}
    meta = body.get("metadata", {})
    problems |= {f"metadata.{f}" for f in meta if f not in _GEMINI_BATCH}
    if genai_transformers.t_job_state(meta.get("state")) == meta.get("state"):  # genai only warns on unknown ones
        problems.add("metadata.state")
    for name, value in meta.get("batchStats", {}).items():
        if name not in _GEMINI_STATS or not (isinstance(value, str) and value.isdigit()):
            problems.add(f"metadata.batchStats.{name}")
    try:
        genai_types.BatchJob.model_validate(genai_batches._BatchJob_from_mldev(body))  # extra="forbid"
    except pydantic.ValidationError as exc:
        problems |= {str(err["loc"][0]) for err in exc.errors()}
    return problems


def _gemini(emu: Emulator, key: str) -> Adapter:
    http, bodies = _capturing_http()
    options = genai_types.HttpOptions(base_url=emu.url + "/gemini", api_version="v1beta", httpx_client=http)
    client = genai.Client(api_key=key, http_options=options)
    return Adapter(
        "google-genai:gemini",
        "gemini",
        lambda b: _genai_call(lambda: client.batches.cancel(name=f"batches/{b}"), bodies),
        lambda b: _genai_call(lambda: client.batches.get(name=f"batches/{b}"), bodies),
        _gemini_problems,
        lambda m: str(m.name).removeprefix("batches/"),
        cancel_answers_batch=False,
        absent_id="batch-nobody-made",
        unauthorized_status=400,
    )


VERTEX_PROJECT, VERTEX_LOCATION = "bcw-sdk-project", "us-central1"


class _RefusedToken(google.auth.credentials.Credentials):
    """A token the API refuses, which "refreshes" to itself: after a 401 the SDK refreshes once, resends, and
    then raises its own error for the second 401, as with any revoked credential."""

    def __init__(self, token: str) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.token = token

    def refresh(self, request: Any) -> None:
        return None


def _vertex_credentials(emu: Emulator, key: str) -> google.auth.credentials.Credentials:
    """For the default key, a throw-away service account the emulator trusts (google-auth mints its tokens at
    the emulator's token endpoint); for any other, a static token the API will refuse."""
    if key != DEFAULT_KEY:
        return _RefusedToken(key)
    sa = make_service_account_key(Path(tempfile.mkdtemp(prefix="bcw-sdk-")), emu.google_token_uri, name="bcw-sdk")
    emu.trust_google_key(sa.key_id, sa.client_email, sa.public_pem)
    credentials: google.auth.credentials.Credentials = service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
        str(sa.path), scopes=["https://www.googleapis.com/auth/cloud-platform"]
    )
    return credentials


def _discovery_schema() -> dict[str, Any]:
    """Vertex AI's discovery document (googleapiclient ships it) as one JSON Schema, unknown fields refused."""
    document = json.loads(
        resources.files("googleapiclient").joinpath("discovery_cache/documents/aiplatform.v1.json").read_text()
    )

    def convert(node: dict[str, Any]) -> dict[str, Any]:  # noqa: PLR0911 - one return per discovery type
        if "$ref" in node:
            return {"$ref": f"#/definitions/{node['$ref']}"}
        kind = node.get("type")
        if kind == "object" and "properties" in node:
            props = {k: convert(v) for k, v in node["properties"].items()}
            return {"type": "object", "properties": props, "additionalProperties": False}
        if kind == "object":
            extra = node.get("additionalProperties")
            return {"type": "object", "additionalProperties": convert(extra) if extra else True}
        if kind == "array":
            return {"type": "array", "items": convert(node.get("items", {}))}
        if kind == "string" and node.get("format") in ("int64", "uint64"):
            return {"type": "string", "pattern": "^-?[0-9]+$"}  # proto3 JSON: int64 as a decimal string
        if kind == "string" and node.get("format") == "google-datetime":
            return {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$"}
        if kind == "string":
            return {"type": "string", **({"enum": node["enum"]} if "enum" in node else {})}
        if kind in ("integer", "number", "boolean"):
            return {"type": kind}
        return {}  # "any"

    definitions = {name: convert(schema) for name, schema in document["schemas"].items()}
    return {"$ref": "#/definitions/GoogleCloudAiplatformV1BatchPredictionJob", "definitions": definitions}


_VERTEX_VALIDATOR: list[Any] = []


def _vertex_problems(raw: bytes) -> set[str]:
    if not _VERTEX_VALIDATOR:
        schema = _discovery_schema()
        _VERTEX_VALIDATOR.append(Draft7Validator(schema))
    problems: set[str] = set()
    for error in _VERTEX_VALIDATOR[0].iter_errors(json.loads(raw)):
        if error.absolute_path:
            problems.add(str(error.absolute_path[0]))
        elif error.validator == "additionalProperties":  # unknown top-level fields: name each one
            problems |= set(error.instance) - set(error.schema.get("properties", {}))
        else:
            problems.add(error.message)
    return problems


def _vertex(emu: Emulator, key: str) -> Adapter:
    http, bodies = _capturing_http()
    options = genai_types.HttpOptions(base_url=emu.url + "/vertex", api_version="v1", httpx_client=http)
    client = genai.Client(
        vertexai=True,
        project=VERTEX_PROJECT,
        location=VERTEX_LOCATION,
        credentials=_vertex_credentials(emu, key),
        http_options=options,
    )
    return Adapter(
        "google-genai:vertex",
        "vertex",
        lambda b: _genai_call(lambda: client.batches.cancel(name=b), bodies),
        lambda b: _genai_call(lambda: client.batches.get(name=b), bodies),
        _vertex_problems,
        lambda m: str(m.name).rsplit("/", 1)[-1],
        cancel_answers_batch=False,
        absent_id="1234567890123",
    )


def _aiplatform_call(call: Callable[[], Any], bodies: list[bytes]) -> Answer:
    try:
        parsed = call()
    except google_exceptions.GoogleAPICallError as exc:
        raise SdkError(type(exc), exc.code, bodies[-1] if bodies else b"") from exc
    except requests.RequestException as exc:  # the REST transport's session is requests'
        raise SdkError(type(exc), None, b"") from exc
    return Answer(parsed, bodies[-1])


def _aiplatform_problems(raw: bytes) -> set[str]:
    """The discovery document's field-level problems, and the library's own proto parse with unknown fields
    refused (``BatchPredictionJob.from_json``), which must agree that the answer is clean."""
    problems = _vertex_problems(raw)
    try:
        aiplatform_v1.BatchPredictionJob.from_json(raw, ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        problems = problems or {f"(proto) {exc}"}
    return problems


def _aiplatform(emu: Emulator, key: str) -> Adapter:
    """google-cloud-aiplatform's own JobServiceClient over its REST transport (the emulator speaks no gRPC)."""
    transport = JobServiceRestTransport(
        host=emu.url.removeprefix("http://") + "/vertex", credentials=_vertex_credentials(emu, key), url_scheme="http"
    )
    bodies: list[bytes] = []
    transport._session.hooks["response"].append(lambda r, *_, **__: bodies.append(r.content))
    client = aiplatform_v1.JobServiceClient(transport=transport)
    scope = f"projects/{VERTEX_PROJECT}/locations/{VERTEX_LOCATION}/batchPredictionJobs"
    return Adapter(
        "aiplatform:vertex",
        "vertex",
        lambda b: _aiplatform_call(lambda: client.cancel_batch_prediction_job(name=f"{scope}/{b}", retry=None), bodies),
        lambda b: _aiplatform_call(lambda: client.get_batch_prediction_job(name=f"{scope}/{b}", retry=None), bodies),
        _aiplatform_problems,
        lambda m: str(m.name).rsplit("/", 1)[-1],
        cancel_answers_batch=False,
        absent_id="1234567890123",
    )


def _bedrock_call(call: Callable[[], dict[str, Any]], raw: list[bytes]) -> Answer:
    try:
        parsed = call()
    except botocore.exceptions.ClientError as exc:
        raise SdkError(type(exc), exc.response["ResponseMetadata"]["HTTPStatusCode"], raw[-1]) from exc
    except botocore.exceptions.HTTPClientError as exc:
        raise SdkError(type(exc), None, b"") from exc
    length = parsed["ResponseMetadata"]["HTTPHeaders"].get("content-length")
    if length is not None and int(length) != len(raw[-1]):
        # botocore hands a body cut off mid-way to its parser as it is (a 200 then "parses" into {"message": …});
        # report it as what it is on the wire, a connection cut off, like the other SDKs do
        raise SdkError(ConnectionError, None, b"")
    return Answer(parsed, raw[-1])


def _stop_answer(answer: Answer) -> Answer:
    """``StopModelInvocationJob`` has no output members: botocore parses the empty 200 into metadata only."""
    if set(answer.parsed) != {"ResponseMetadata"}:
        raise AssertionError(f"botocore parsed members out of an empty stop answer: {answer.parsed}")
    return Answer(None, answer.raw)


def _bedrock_problems(raw: bytes) -> set[str]:
    """The answer against botocore's own output shape: every member known, typed, in its enum; required present."""
    shape = _BEDROCK_MODEL.operation_model("GetModelInvocationJob").output_shape
    return {path.split(".", 1)[0] for path in _shape_problems(shape, json.loads(raw), "")}


def _shape_problems(shape: Any, value: Any, path: str) -> list[str]:  # noqa: PLR0911 - one check per shape type
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            return [path or "(body)"]
        found = [f"{path}{k}" for k in value if k not in shape.members]
        found += [f"{path}{k}" for k in shape.required_members if k not in value]
        for name, member in value.items():
            if name in shape.members:
                found += _shape_problems(shape.members[name], member, f"{path}{name}.")
        return found
    where = path.rstrip(".")
    if kind == "list":
        if not isinstance(value, list):
            return [where]
        return [p for item in value for p in _shape_problems(shape.member, item, path)]
    if kind == "string":
        ok = isinstance(value, str) and (not shape.enum or value in shape.enum)
        return [] if ok else [where]
    if kind == "timestamp":
        return [] if isinstance(value, str) and datetime.fromisoformat(value.replace("Z", "+00:00")) else [where]
    if kind in ("integer", "long"):
        return [] if isinstance(value, int) and not isinstance(value, bool) else [where]
    if kind == "boolean":
        return [] if isinstance(value, bool) else [where]
    return []


def _bedrock(emu: Emulator, key: str) -> Adapter:
    access_key, secret = DEFAULT_AWS_KEY
    client: Any = botocore.session.get_session().create_client(
        "bedrock",
        endpoint_url=emu.url + "/bedrock",
        region_name="us-east-1",
        aws_access_key_id=access_key,
        aws_secret_access_key=secret if key == DEFAULT_KEY else key,
        config=botocore.config.Config(retries={"mode": "standard", "total_max_attempts": 1}),
    )
    raw: list[bytes] = []
    client.meta.events.register("after-call.bedrock.*", lambda http_response, **_: raw.append(http_response.content))
    client.meta.events.register(
        "needs-retry.bedrock.*", lambda response, **_: raw.append(response[0].content) if response else None
    )
    return Adapter(
        "botocore:bedrock",
        "bedrock",
        lambda b: _stop_answer(_bedrock_call(lambda: client.stop_model_invocation_job(jobIdentifier=b), raw)),
        lambda b: _bedrock_call(lambda: client.get_model_invocation_job(jobIdentifier=b), raw),
        _bedrock_problems,
        lambda m: str(m["jobArn"]).rsplit("/", 1)[-1],
        cancel_answers_batch=False,
        empty_cancel=b"",
        absent_id="nobodymade00",
        unauthorized_status=403,
    )


_BEDROCK_MODEL = botocore.session.get_session().get_service_model("bedrock")

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
    "google-genai:gemini": _gemini,
    "google-genai:vertex": _vertex,
    "aiplatform:vertex": _aiplatform,
    "botocore:bedrock": _bedrock,
}

#: The SDK's own exception class for an HTTP status, for the Stainless-built SDKs.
STAINLESS_ERRORS = {400: "BadRequestError", 401: "AuthenticationError", 404: "NotFoundError", 409: "ConflictError"}
STAINLESS_ERRORS |= {429: "RateLimitError", 500: "InternalServerError", 502: "InternalServerError"}
STAINLESS_ERRORS |= {503: "InternalServerError", 529: "OverloadedError"}


def anthropic_error_problems(raw: bytes) -> set[str]:
    """Anthropic's error bodies against the SDK's ``ErrorResponse`` (a union keyed by ``error.type``)."""
    return _pydantic_problems(AnthropicErrorResponse)(raw)
