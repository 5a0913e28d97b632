"""The batch objects and error bodies of the cloud providers: Gemini API, Vertex AI and AWS Bedrock.

As in ``native_shapes``, one lifecycle (in OpenAI's words) is rendered in each provider's own fields, which the
SDK fidelity tests hold to google-genai's models, Vertex AI's discovery document and botocore's Bedrock service
model. What the sources leave open is the emulator's own rendering, marked here:

* Gemini has no cancelling state: a batch still stopping shows ``BATCH_STATE_RUNNING`` (a scenario with
  ``cancelling_polls=0`` is the instant cancel a third-party implementer observed). A cancel answers ``{}``.
* Vertex answers a cancel with ``{}``, Bedrock a stop with an empty 200 body (both documented).
* The refusal of a cancel of a finished batch: Gemini and Vertex answer 400 ``FAILED_PRECONDITION`` (not
  documented); Bedrock answers 400 ``ValidationException`` (what LiteLLM treats as "already terminal") or, with
  the scenario's ``bedrock_finished: ConflictException``, the error AWS documents for the stop.
* Gemini's refused API key: 400 ``INVALID_ARGUMENT`` with ``ErrorInfo.reason`` ``API_KEY_INVALID`` (what the
  API is widely reported to answer; Google does not document it). Every other error body is google.rpc.Status
  (Google) or rest-json's ``x-amzn-ErrorType`` + ``{"message"}`` (AWS), with messages of the emulator's own.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from batch_cancel_emulator import attributes
from batch_cancel_emulator.model import Batch

__all__ = ["DIALECTS", "ERRORS", "VERTEX_PREFIX", "batch_body", "batch_object", "error_headers", "status_word"]

DIALECTS = frozenset({"gemini", "vertex", "bedrock"})
#: Vertex's paths hold the account's project and location before the job: ``{prefix}{p}/locations/{l}/…``.
VERTEX_PREFIX = "/vertex/v1/projects/"
_TOTAL = 10
_DAY = 86_400
_ENDED = frozenset({"cancelled", "completed", "failed", "expired"})
_OUTCOMES = {"cancelled": (4, 0, 6), "completed": (9, 1, 0), "failed": (0, 10, 0), "expired": (3, 0, 7)}
_WORDS = {
    "gemini": {
        "validating": "BATCH_STATE_PENDING",
        "queued": "BATCH_STATE_PENDING",
        "in_progress": "BATCH_STATE_RUNNING",
        "finalizing": "BATCH_STATE_RUNNING",
        "cancelling": "BATCH_STATE_RUNNING",
        "cancelled": "BATCH_STATE_CANCELLED",
        "completed": "BATCH_STATE_SUCCEEDED",
        "failed": "BATCH_STATE_FAILED",
        "expired": "BATCH_STATE_EXPIRED",
    },
    "vertex": {
        "validating": "JOB_STATE_PENDING",
        "queued": "JOB_STATE_QUEUED",
        "in_progress": "JOB_STATE_RUNNING",
        "finalizing": "JOB_STATE_RUNNING",
        "cancelling": "JOB_STATE_CANCELLING",
        "cancelled": "JOB_STATE_CANCELLED",
        "completed": "JOB_STATE_SUCCEEDED",
        "failed": "JOB_STATE_FAILED",
        "expired": "JOB_STATE_EXPIRED",
    },
    "bedrock": {
        "validating": "Validating",
        "queued": "Scheduled",
        "in_progress": "InProgress",
        "finalizing": "InProgress",
        "cancelling": "Stopping",
        "cancelled": "Stopped",
        "completed": "Completed",
        "failed": "Failed",
        "expired": "Expired",
    },
}


def status_word(dialect: str, status: str) -> str:
    """``status`` as ``dialect`` writes it; a word it does not know (``JOB_STATE_PAUSED``) passes unchanged."""
    return _WORDS[dialect].get(status, status)


def batch_body(batch: Batch, op: str, *, scope: tuple[str, str] = ("emulator-project", "us-central1")) -> bytes:
    """What a cancel (``{}``, or nothing for Bedrock) or a retrieve answers; ``scope`` = Vertex project, location."""
    if op == "cancel":
        return b"" if batch.dialect == "bedrock" else b"{}"
    return json.dumps(batch_object(batch, scope=scope)).encode()


def batch_object(batch: Batch, *, scope: tuple[str, str] = ("emulator-project", "us-central1")) -> dict[str, Any]:
    """The batch as a retrieve (or a list item) shows it, its selector attributes included."""
    if batch.dialect == "gemini":
        body = _gemini(batch)
    elif batch.dialect == "vertex":
        body = _vertex(batch, *scope)
    else:
        body = _bedrock(batch)
    return attributes.apply(batch, body, scope)


def _rfc3339(unix: int | None, nanos: bool = False) -> str | None:
    if unix is None:
        return None
    text = datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return text + (".123456789Z" if nanos else "Z")  # Google writes up to nanoseconds


def _ended_at(batch: Batch) -> int | None:
    return batch.times.get(f"{batch.status}_at") if batch.status in _ENDED else None


def _gemini(batch: Batch) -> dict[str, Any]:
    status = batch.shown_status
    ok, failed, _ = _OUTCOMES.get(status, (4, 0, 0))
    ended = status in _ENDED
    name = f"batches/{batch.id}"
    meta: dict[str, Any] = {
        "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
        "model": "models/gemini-2.5-flash",
        "displayName": "emulator batch",
        "name": name,
        "state": status_word("gemini", status),
        "createTime": _rfc3339(batch.created_at, nanos=True),
        "updateTime": _rfc3339(_ended_at(batch) or batch.created_at, nanos=True),
        "batchStats": {  # int64 → JSON strings (proto3 JSON)
            "requestCount": str(_TOTAL),
            "successfulRequestCount": str(ok),
            "failedRequestCount": str(failed),
            "pendingRequestCount": str(0 if ended else _TOTAL - ok - failed),
        },
    }
    if ended:
        meta["endTime"] = _rfc3339(_ended_at(batch), nanos=True)
        meta["output"] = {"responsesFile": f"files/batch-{batch.id}-responses"}
    body: dict[str, Any] = {"name": name, "metadata": meta, "done": ended}
    if ended and status != "failed":
        body["response"] = {
            "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatchOutput",
            "responsesFile": f"files/batch-{batch.id}-responses",
        }
    if status == "failed":
        body["error"] = {"code": 3, "message": "every request of the batch failed"}
    return body


def _vertex(batch: Batch, project: str, location: str) -> dict[str, Any]:
    status = batch.shown_status
    ok, failed, incomplete = _OUTCOMES.get(status, (4, 0, 0))
    ended = status in _ENDED
    body: dict[str, Any] = {
        "name": f"projects/{project}/locations/{location}/batchPredictionJobs/{batch.id}",
        "displayName": "emulator batch",
        "model": f"projects/{project}/locations/{location}/publishers/google/models/gemini-2.5-flash",
        "inputConfig": {"instancesFormat": "jsonl", "gcsSource": {"uris": ["gs://emulator-bucket/input.jsonl"]}},
        "outputConfig": {
            "predictionsFormat": "jsonl",
            "gcsDestination": {"outputUriPrefix": "gs://emulator-bucket/output/"},
        },
        "state": status_word("vertex", status),
        "createTime": _rfc3339(batch.created_at, nanos=True),
        "startTime": _rfc3339(batch.created_at, nanos=True),
        "updateTime": _rfc3339(_ended_at(batch) or batch.created_at, nanos=True),
        "completionStats": {"successfulCount": str(ok), "failedCount": str(failed)},
    }
    if ended:
        body["endTime"] = _rfc3339(_ended_at(batch), nanos=True)
        body["completionStats"]["incompleteCount"] = str(incomplete)
        body["outputInfo"] = {"gcsOutputDirectory": f"gs://emulator-bucket/output/prediction-{batch.id}"}
    if status == "failed":
        body["error"] = {"code": 3, "message": "every request of the job failed"}
    return body


def _bedrock(batch: Batch) -> dict[str, Any]:
    status = batch.shown_status
    ok, failed, _ = _OUTCOMES.get(status, (4, 0, 0))
    body: dict[str, Any] = {
        "jobArn": f"arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/{batch.id}",
        "jobName": f"emulator-{batch.id}",
        "modelId": "anthropic.claude-3-haiku-20240307-v1:0",
        "roleArn": "arn:aws:iam::123456789012:role/emulator-batch",
        "status": status_word("bedrock", status),
        "submitTime": _rfc3339(batch.created_at),
        "lastModifiedTime": _rfc3339(_ended_at(batch) or batch.created_at),
        "inputDataConfig": {"s3InputDataConfig": {"s3Uri": "s3://emulator-bucket/input/"}},
        "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": "s3://emulator-bucket/output/"}},
        "timeoutDurationInHours": 24,
        "jobExpirationTime": _rfc3339(batch.created_at + _DAY),
        "totalRecordCount": _TOTAL,
        "processedRecordCount": ok + failed,
        "successRecordCount": ok,
        "errorRecordCount": failed,
    }
    if status in _ENDED:
        body["endTime"] = _rfc3339(_ended_at(batch))
    if status == "failed":
        body["message"] = "every record of the job failed"
    return body


def _google(code: int, status: str, message: str, reason: str | None = None) -> object:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if reason is not None:
        error["details"] = [
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "domain": "googleapis.com"}
        ]
    return {"error": error}


def _aws(type_: str, message: str) -> object:
    return {"__type": type_, "message": message}  # the type also goes to ``x-amzn-ErrorType`` (error_headers)


_UNAUTHENTICATED = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid "
    "authentication credential."
)
_GOOGLE_COMMON: dict[str, tuple[int | None, object]] = {
    "not_found": (404, _google(404, "NOT_FOUND", "Batch $ID not found.")),
    "overload": (503, _google(503, "UNAVAILABLE", "The service is currently unavailable.")),
    "rate_limit": (429, _google(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).")),
    "finished": (400, _google(400, "FAILED_PRECONDITION", "Batch $ID is in state $STATE and cannot be cancelled.")),
    "server_error": (None, _google(500, "INTERNAL", "Internal error encountered.")),
}
# kind → (HTTP status or None for "the status the fault asked for", body); $ID and $STATE are filled in.
ERRORS: dict[str, dict[str, tuple[int | None, object]]] = {
    "gemini": _GOOGLE_COMMON
    | {
        "unauthorized": (
            400,
            _google(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", "API_KEY_INVALID"),
        ),
    },
    "vertex": _GOOGLE_COMMON
    | {
        "unauthorized": (401, _google(401, "UNAUTHENTICATED", _UNAUTHENTICATED)),
        "token_expired": (401, _google(401, "UNAUTHENTICATED", _UNAUTHENTICATED, "ACCESS_TOKEN_EXPIRED")),
    },
    "bedrock": {
        "unauthorized": (403, _aws("MissingAuthenticationTokenException", "Missing Authentication Token")),
        "unknown_key": (
            403,
            _aws("UnrecognizedClientException", "The security token included in the request is invalid."),
        ),
        "bad_signature": (
            403,
            _aws(
                "InvalidSignatureException",
                "The request signature we calculated does not match the signature you provided. Check your AWS "
                "Secret Access Key and signing method. Consult the service documentation for details.",
            ),
        ),
        "signature_expired": (403, _aws("InvalidSignatureException", "Signature expired.")),
        "expired_token": (403, _aws("ExpiredTokenException", "The security token included in the request is expired")),
        "not_found": (404, _aws("ResourceNotFoundException", "The specified job $ID was not found.")),
        "overload": (503, _aws("ServiceUnavailableException", "Service is temporarily unavailable.")),
        "rate_limit": (429, _aws("ThrottlingException", "Too many requests, please wait before trying again.")),
        "finished": (400, _aws("ValidationException", "The job $ID is in status $STATE and cannot be stopped.")),
        "finished_conflict": (400, _aws("ConflictException", "The job $ID is in status $STATE.")),
        "server_error": (None, _aws("InternalServerException", "An internal server error occurred.")),
    },
}


def error_headers(dialect: str | None, status: int, body: bytes) -> list[tuple[bytes, bytes]]:
    """Bedrock's error type travels in ``x-amzn-ErrorType`` (the rest-json protocol), copied from the body."""
    if dialect != "bedrock" or status < 400:
        return []
    try:
        kind = json.loads(body).get("__type")
    except (ValueError, AttributeError):
        return []
    return [(b"x-amzn-errortype", str(kind).encode())] if kind else []
