"""The batch objects and error bodies of the providers that are not OpenAI-shaped: Anthropic, Mistral, Together, xAI.

The emulator keeps one lifecycle for every dialect, in OpenAI's words (``in_progress`` → ``cancelling`` →
``cancelled``/``completed``/``failed``/``expired``); this module renders a batch in each provider's own words
and fields. What the sources document is followed (field names and types are those of each official SDK's
models, which the SDK fidelity tests hold the emulator to). What they do not document is marked here as the
emulator's own rendering:

* Anthropic: the ``finished`` refusal (400 ``invalid_request_error``; only third-party clones assume it).
  Anthropic has no failed batch: ``final: failed`` ends with every request ``errored``.
* Mistral, Together, xAI: every error body, and the ``finished`` refusal (a 400).
* xAI: no expiry is documented; ``final: expired`` ends with the unfinished requests ``errored``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from batch_cancel_emulator.model import Batch

__all__ = ["DIALECTS", "ERRORS", "batch_object", "status_word"]

DIALECTS = frozenset({"anthropic", "mistral", "together", "xai"})
_TOTAL = 10
_DAY = 86_400
_MISTRAL = {
    "validating": "QUEUED",
    "queued": "QUEUED",
    "in_progress": "RUNNING",
    "finalizing": "RUNNING",
    "cancelling": "CANCELLATION_REQUESTED",
    "cancelled": "CANCELLED",
    "completed": "SUCCESS",
    "failed": "FAILED",
    "expired": "TIMEOUT_EXCEEDED",
}
_ANTHROPIC = dict.fromkeys(("validating", "queued", "in_progress", "finalizing"), "in_progress") | {
    "cancelling": "canceling"
}
_TOGETHER = {"cancelling": "CANCELING", "queued": "VALIDATING", "finalizing": "IN_PROGRESS"}
_ENDED = frozenset({"cancelled", "completed", "failed", "expired"})
#: How the ten requests of a batch stand, by lifecycle status: (succeeded, errored, cancelled, expired).
_OUTCOMES = {"cancelled": (4, 0, 6, 0), "completed": (9, 1, 0, 0), "failed": (0, 10, 0, 0), "expired": (3, 0, 0, 7)}


def status_word(dialect: str, status: str) -> str:
    """``status`` (the lifecycle's word) as ``dialect`` writes it; a word it does not know passes unchanged."""
    if dialect == "anthropic":
        return "ended" if status in _ENDED else _ANTHROPIC.get(status, status)
    if dialect == "mistral":
        return _MISTRAL.get(status, status)
    if dialect == "together":
        return _TOGETHER.get(status, status.upper())
    return status


def batch_object(batch: Batch) -> dict[str, Any]:
    return _RENDER[batch.dialect](batch)


def _iso(unix: int | None) -> str | None:
    return None if unix is None else datetime.fromtimestamp(unix, UTC).isoformat().replace("+00:00", "Z")


def _ended_at(batch: Batch) -> int | None:
    return batch.times.get(f"{batch.status}_at") if batch.status in _ENDED else None


def _anthropic(batch: Batch) -> dict[str, Any]:
    status = batch.shown_status
    succeeded, errored, canceled, expired = _OUTCOMES.get(status, (0, 0, 0, 0))
    ended = status in _ENDED
    return {
        "id": batch.id,
        "type": "message_batch",
        "processing_status": status_word("anthropic", status),
        "request_counts": {
            "processing": 0 if ended else _TOTAL,
            "succeeded": succeeded,
            "errored": errored,
            "canceled": canceled,
            "expired": expired,
        },
        "ended_at": _iso(_ended_at(batch)),
        "created_at": _iso(batch.created_at),
        "expires_at": _iso(batch.created_at + _DAY),
        "archived_at": None,
        "cancel_initiated_at": _iso(batch.times.get("cancelling_at")),
        "results_url": f"https://api.anthropic.com/v1/messages/batches/{batch.id}/results" if ended else None,
    }


def _mistral(batch: Batch) -> dict[str, Any]:
    status = batch.shown_status
    succeeded, errored, _, _ = _OUTCOMES.get(status, (4, 0, 0, 0))
    return {
        "id": batch.id,
        "object": "batch",
        "input_files": ["file-emulator"],
        "metadata": None,
        "endpoint": "/v1/chat/completions",
        "model": "mistral-small-latest",
        "agent_id": None,
        "output_file": "file-emulator-out" if status in _ENDED else None,
        "error_file": None,
        "errors": [{"message": "line 3: invalid JSON", "count": 1}] if errored else [],
        "outputs": None,
        "status": status_word("mistral", status),
        "created_at": batch.created_at,
        "total_requests": _TOTAL,
        "completed_requests": succeeded + errored,
        "succeeded_requests": succeeded,
        "failed_requests": errored,
        "started_at": batch.created_at,
        "completed_at": _ended_at(batch),
    }


def _together(batch: Batch) -> dict[str, Any]:
    status = batch.shown_status
    return {
        "id": batch.id,
        "user_id": "user-emulator",
        "input_file_id": "file-emulator",
        "file_size_bytes": 2048,
        "status": status_word("together", status),
        "job_deadline": _iso(batch.created_at + _DAY),
        "created_at": _iso(batch.created_at),
        "endpoint": "/v1/chat/completions",
        "progress": 100.0 if status in _ENDED else 40.0,
        "model_id": "meta-llama/Llama-3.3-70B-Instruct-Turbo",
        "output_file_id": "file-emulator-out" if status in _ENDED else None,
        "error_file_id": None,
        "error": "requests failed" if status == "failed" else None,
        "completed_at": _iso(_ended_at(batch)),
    }


def _xai(batch: Batch) -> dict[str, Any]:
    status = batch.shown_status
    if status in _ENDED:
        succeeded, errored, cancelled, expired = _OUTCOMES[status]
        pending, errored = 0, errored + expired
    else:
        succeeded, errored, cancelled, pending = 4, 0, 0, 6
    body: dict[str, Any] = {
        "batch_id": batch.id,
        "name": "emulator batch",
        "create_time": _iso(batch.created_at),
        "expire_time": _iso(batch.created_at + _DAY),
        "state": {
            "num_requests": _TOTAL,
            "num_pending": pending,
            "num_success": succeeded,
            "num_error": errored,
            "num_cancelled": cancelled,
        },
    }
    hidden = batch.status == "cancelling" and status != "cancelling"  # the switch hides the cancel's mark too
    if "cancelling_at" in batch.times and not hidden:
        body["cancel_time"] = _iso(batch.times["cancelling_at"])
    return body


_RENDER = {"anthropic": _anthropic, "mistral": _mistral, "together": _together, "xai": _xai}


def _anthropic_error(type_: str, message: str, **extra: Any) -> object:
    return {"type": "error", "error": {"type": type_, "message": message, **extra}, "request_id": "req_emulator"}


def _mistral_error(type_: str, message: str, code: str | None = None) -> object:
    return {"object": "error", "message": message, "type": type_, "param": None, "code": code}


def _together_error(type_: str, message: str, code: str | None = None) -> object:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def _xai_error(code: str, message: str) -> object:
    return {"code": code, "error": message}


# kind → (HTTP status or None for "the status the fault asked for", body); $ID and $STATE are filled in.
ERRORS: dict[str, dict[str, tuple[int | None, object]]] = {
    "anthropic": {  # platform.claude.com/docs/en/api/errors, except "finished" (see the module docstring)
        "unauthorized": (401, _anthropic_error("authentication_error", "invalid x-api-key")),
        "not_found": (404, _anthropic_error("not_found_error", "No message batch found with id '$ID'.")),
        "overload": (529, _anthropic_error("overloaded_error", "Overloaded")),
        "rate_limit": (429, _anthropic_error("rate_limit_error", "Number of requests has exceeded your rate limit.")),
        "quota": (
            429,
            _anthropic_error(
                "rate_limit_error",
                "You have reached your specified API usage limits.",
                details={"error_code": "enforced_spend_limit_reached"},
            ),
        ),
        "finished": (
            400,
            _anthropic_error(
                "invalid_request_error", "Batch $ID cannot be canceled because it has already finished processing."
            ),
        ),
        "server_error": (None, _anthropic_error("api_error", "Internal server error")),
    },
    "mistral": {
        "unauthorized": (401, _mistral_error("unauthorized", "Unauthorized")),
        "not_found": (404, _mistral_error("invalid_request_error", "Batch job $ID not found")),
        "overload": (503, _mistral_error("service_unavailable", "Service unavailable")),
        "rate_limit": (429, _mistral_error("rate_limited", "Requests rate limit exceeded")),
        "finished": (400, _mistral_error("invalid_request_error", "Cannot cancel a batch job with status $STATE")),
        "server_error": (None, _mistral_error("internal_error", "Internal server error")),
    },
    "together": {
        "unauthorized": (401, _together_error("invalid_request_error", "Invalid API key provided", "invalid_api_key")),
        "not_found": (404, _together_error("invalid_request_error", "Batch job $ID not found")),
        "overload": (503, _together_error("server_error", "The server is overloaded")),
        "rate_limit": (429, _together_error("rate_limit", "Rate limit exceeded")),
        "finished": (400, _together_error("invalid_request_error", "Cannot cancel a batch with status $STATE")),
        "server_error": (None, _together_error("server_error", "Internal server error")),
    },
    "xai": {
        "unauthorized": (401, _xai_error("Unauthenticated", "Incorrect API key provided.")),
        "not_found": (404, _xai_error("Not found", "Batch $ID does not exist.")),
        "overload": (503, _xai_error("Unavailable", "The service is currently unavailable.")),
        "rate_limit": (429, _xai_error("Resource exhausted", "Too many requests.")),
        "finished": (400, _xai_error("Failed precondition", "Batch $ID cannot be cancelled: it is $STATE.")),
        "server_error": (None, _xai_error("Internal", "Internal server error.")),
    },
}
