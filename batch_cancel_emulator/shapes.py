"""Each dialect's batch object and error bodies, as the providers' documentation shows them.

This module holds the OpenAI-shaped dialects (OpenAI, SiliconFlow, DashScope, DeepInfra, Azure) and routes
the others to ``native_shapes``. Where no public document shows a shape (cancel of a finished batch on
SiliconFlow, DashScope, DeepInfra or Azure; DeepInfra's and Azure's error bodies) the emulator picks a
plausible one and says so here, so a test never mistakes an emulator guess for a provider fact.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from batch_cancel_emulator import attributes, cloud_shapes, native_shapes
from batch_cancel_emulator.model import Batch
from worker.contract import TIMESTAMP_FIELDS

__all__ = ["COLON_CANCEL", "PREFIXES", "batch_body", "batch_object", "error_response", "has_error"]

#: Path prefix → dialect; the part after the prefix is ``{batch_id}`` or ``{batch_id}/cancel``.
PREFIXES: dict[str, str] = {
    "/openai/v1/batches/": "openai",
    "/siliconflow/v1/batches/": "siliconflow",
    "/dashscope/compatible-mode/v1/batches/": "dashscope",
    "/deepinfra/v1/openai/batches/": "deepinfra",
    "/anthropic/v1/messages/batches/": "anthropic",
    "/mistral/v1/batch/jobs/": "mistral",
    "/azure/openai/v1/batches/": "azure",  # the v1 API (first: the test helper's base URL for azure)
    "/azure/openai/batches/": "azure",  # the classic API: ``?api-version=`` required
    "/together/v1/batches/": "together",
    "/xai/v1/batches/": "xai",
    "/gemini/v1beta/batches/": "gemini",
    # Vertex: ``/vertex/v1/projects/{p}/locations/{l}/batchPredictionJobs/`` (app._route reads the scope first)
    cloud_shapes.VERTEX_PREFIX: "vertex",
    "/bedrock/model-invocation-job/": "bedrock",  # ``{id}/stop`` instead of ``{id}/cancel``
}
#: Dialects whose cancel is ``{batch_id}:cancel`` (a custom method), not ``{batch_id}/cancel``.
COLON_CANCEL = frozenset({"xai", "gemini", "vertex"})
_TIMESTAMPS = tuple(name for name in TIMESTAMP_FIELDS if name not in ("created_at", "expires_at"))
Response = tuple[int, bytes, bytes]  # status, body, content-type


def batch_body(batch: Batch, op: str, scope: tuple[str, str] | None = None) -> bytes:
    """The batch object ``batch`` answers with, in its dialect's shape, as a cancel or a retrieve shows it
    (``scope``: the project and location a Vertex request named)."""
    if batch.dialect in cloud_shapes.DIALECTS:
        return cloud_shapes.batch_body(batch, op, scope=scope or ("emulator-project", "us-central1"))
    return json.dumps(batch_object(batch, op)).encode()


def batch_object(batch: Batch, op: str = "retrieve", scope: tuple[str, str] | None = None) -> dict[str, Any]:
    """The batch object (as a dict) a retrieve, a cancel or one list item shows, in its dialect's shape."""
    if batch.dialect in cloud_shapes.DIALECTS:
        return cloud_shapes.batch_object(batch, scope=scope or ("emulator-project", "us-central1"))
    body = native_shapes.batch_object(batch) if batch.dialect in native_shapes.DIALECTS else _openai_like(batch, op)
    return attributes.apply(batch, body)


def _openai_like(batch: Batch, op: str) -> dict[str, Any]:
    dialect, batch_id, times, created = batch.dialect, batch.id, batch.times, batch.created_at
    status = batch.shown_status
    absent: int | None = 0 if dialect == "dashscope" else None  # DashScope writes 0 for "not yet"
    body: dict[str, Any] = {
        "id": batch_id,
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "errors": None,
        "input_file_id": "file-emulator",
        "completion_window": "24h",
        "status": status,
        "output_file_id": None,
        "error_file_id": None,
        "created_at": created,
        "expires_at": created + 86_400,
        **{name: times.get(name, absent) for name in _TIMESTAMPS},
        "request_counts": {"total": 10, "completed": 4, "failed": 0},
        "metadata": {},
    }
    if dialect == "openai":
        body |= {"model": "gpt-4o-mini", "usage": None}
    elif dialect == "siliconflow":  # docs.siliconflow.cn batch API reference: null on cancel, [] / {} on retrieve
        body["errors"] = None if op == "cancel" else []
        body["request_counts"] = None if op == "cancel" else {}
        body["metadata"] = {"description": "nightly eval job"}
    elif dialect == "dashscope":  # help.aliyun.com/en/model-studio/batch-interfaces-compatible-with-openai
        body["errors"] = {"object": "list", "data": []}
        body["metadata"] = {"ds_name": "emulator", "ds_description": "emulated batch"}
    elif dialect == "deepinfra":  # docs.deepinfra.com/api-reference/files-&-batches/cancel-openai-batch
        body["errors"] = {"object": "list", "data": []}
        body["model"] = "meta-llama/Meta-Llama-3.1-8B-Instruct"
        body["usage"] = {
            "input_tokens": 120,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 80,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 200,
        }
    elif dialect == "azure" and batch.scenario.doc_example_shape:  # Microsoft's reference examples
        body |= {name: _iso(value) for name, value in body.items() if name.endswith("_at") and value is not None}
        body["status"] = status.capitalize()
        body["request_counts"] = {"total": None, "completed": None, "failed": None}
    return body


def _iso(unix: int) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat().replace("+00:00", "Z")


def _oai(message: str, type_: str, code: str | None) -> object:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def _ds(code: str, message: str) -> object:
    body = {"error": {"code": code, "message": message, "type": code, "param": None}}
    return body | {"request_id": "emulator-request"}


def _sf(code: int, message: str) -> object:
    return {"code": code, "message": message, "data": None}


def _az(code: str, message: str) -> object:
    return {"error": {"code": code, "message": message}}


# kind → (HTTP status or None for "the status the fault asked for", body). $ID and $STATE are filled in.
_ERRORS: dict[str, dict[str, tuple[int | None, object]]] = {
    "openai": {
        "unauthorized": (401, _oai("Incorrect API key provided.", "invalid_request_error", "invalid_api_key")),
        "not_found": (404, _oai("No batch found with id '$ID'.", "invalid_request_error", None)),
        "overload": (503, _oai("The server is overloaded.", "service_unavailable_error", "server_is_overloaded")),
        "rate_limit": (429, _oai("Rate limit reached for requests.", "requests", "rate_limit_exceeded")),
        # verbatim as openai-python's callers see it (litellm's batch tests expect this ConflictError message)
        "finished": (409, _oai("Cannot cancel a batch with status '$STATE'.", "invalid_request_error", None)),
        "server_error": (None, _oai("The server had an error processing your request.", "server_error", None)),
        # OpenAI's documented error codes: insufficient_quota is a billing stop, not load
        "quota": (429, _oai("You exceeded your current quota.", "insufficient_quota", "insufficient_quota")),
    },
    "azure": {  # all the emulator's rendering of Azure's {"error": {code, message}}; finished presumed as OpenAI's
        "unauthorized": (401, _az("401", "Access denied due to invalid subscription key or wrong API endpoint.")),
        "bad_token": (  # an Entra token missing, expired, revoked or not issued here (entra.py)
            401,
            _az(
                "401",
                "Unauthorized. Access token is missing, invalid, audience is incorrect "
                "(https://cognitiveservices.azure.com), or have expired.",
            ),
        ),
        "not_found": (404, _az("NotFound", "Batch $ID not found.")),
        "overload": (503, _az("ServiceUnavailable", "The service is temporarily unable to process your request.")),
        "rate_limit": (429, _az("429", "Requests to the Batch API have exceeded the rate limit. Retry later.")),
        "finished": (409, _oai("Cannot cancel a batch with status '$STATE'.", "invalid_request_error", None)),
        "server_error": (None, _az("InternalServerError", "The server had an error processing your request.")),
        "no_version": (400, _az("BadRequest", "Missing required query parameter: api-version.")),
    },
    "siliconflow": {  # docs.siliconflow.cn error codes and API reference; "finished" is the emulator's guess
        "unauthorized": (401, "Invalid token"),
        "not_found": (404, "404 page not found"),
        "overload": (503, _sf(50505, "Model service overloaded. Please try again later.")),
        "rate_limit": (
            429,
            {"message": "Request was rejected due to rate limiting. Details:TPM limit reached.", "data": None},
        ),
        "finished": (400, _sf(20015, "Batch with status $STATE cannot be cancelled.")),
        "server_error": (None, "Internal Server Error"),
    },
    "dashscope": {  # compatible-mode body shape unconfirmed: OpenAI-style with DashScope codes
        "unauthorized": (401, _ds("invalid_api_key", "Incorrect API key provided.")),
        "not_found": (404, _ds("NotFound", "Batch $ID not found.")),
        "overload": (503, _ds("ServiceUnavailable", "The service is temporarily unavailable.")),
        "rate_limit": (429, _ds("Throttling.RateQuota", "Requests rate limit exceeded, please try again later.")),
        "finished": (400, _ds("InvalidParameter", "Cannot cancel a batch with status '$STATE'.")),
        "server_error": (None, _ds("InternalError", "An internal error has occurred.")),
    },
    "deepinfra": {  # all unconfirmed: FastAPI's {"detail": ...}
        "unauthorized": (401, {"detail": {"error": "Invalid API key"}}),
        "not_found": (404, {"detail": "Batch $ID not found"}),
        "overload": (503, {"detail": "Service temporarily unavailable"}),
        "rate_limit": (429, {"detail": "Rate limited"}),
        "finished": (400, {"detail": "Cannot cancel a batch with status '$STATE'."}),
        "server_error": (None, {"detail": "Internal Server Error"}),
    },
}


def has_error(dialect: str, kind: str) -> bool:
    """Whether the emulator knows what ``dialect`` answers for ``kind`` (``quota`` is known for few)."""
    return kind in _ERRORS.get(dialect, native_shapes.ERRORS.get(dialect, cloud_shapes.ERRORS.get(dialect, {})))


def error_response(dialect: str, kind: str, *, batch_id: str = "", status: int = 500, state: str = "") -> Response:
    """The answer for ``kind`` in unauthorized, not_found, no_route, overload, rate_limit, quota, server_error,
    finished (and azure's no_version)."""
    if kind == "no_route":
        if dialect == "siliconflow":  # Go's default mux answer: plain text
            return 404, b"404 page not found", b"text/plain; charset=utf-8"
        kind = "not_found"
    errors = _ERRORS.get(dialect) or native_shapes.ERRORS.get(dialect) or cloud_shapes.ERRORS[dialect]
    code, body = errors[kind]
    if dialect in native_shapes.DIALECTS:
        state = native_shapes.status_word(dialect, state)
    elif dialect in cloud_shapes.DIALECTS:
        state = cloud_shapes.status_word(dialect, state)
    text = json.dumps(body).replace("$ID", batch_id).replace("$STATE", state)
    return code if code is not None else status, text.encode(), b"application/json"
