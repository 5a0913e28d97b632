"""A batch's selector attributes (metadata, model, endpoint, name) written into its dialect's own fields.

Set through the admin API (``Attributes``); a batch without them keeps its dialect's default rendering. Where a
provider's object has no place for an attribute (Anthropic: none of them; Together and Gemini: no metadata;
xAI: only a name; Bedrock: tags are not in the job object), it is not rendered, exactly as the provider
could not show it: a selector on it must be refused by the worker, and the list tests prove that.
"""

from __future__ import annotations

from typing import Any

from batch_cancel_emulator.model import Batch

__all__ = ["apply"]

_OPENAI_LIKE = frozenset({"openai", "siliconflow", "dashscope", "deepinfra", "azure"})


def apply(batch: Batch, body: dict[str, Any], scope: tuple[str, str] | None = None) -> dict[str, Any]:
    """``body`` (the batch object as rendered) with the batch's attributes in place; changed in place and returned."""
    dialect = batch.dialect
    if dialect in _OPENAI_LIKE or dialect == "mistral":
        if batch.metadata:
            body["metadata"] = dict(batch.metadata)
        _set(body, "model", batch.model)
        _set(body, "endpoint", batch.endpoint)
    elif dialect == "together":
        _set(body, "model_id", batch.model)
        _set(body, "endpoint", batch.endpoint)
    elif dialect == "xai":
        _set(body, "name", batch.name)
    elif dialect == "gemini":
        meta = body["metadata"]
        _set(meta, "displayName", batch.name)
        _set(meta, "model", None if batch.model is None else _prefixed(batch.model, "models/"))
    elif dialect == "vertex":
        project, location = scope or ("emulator-project", "us-central1")
        _set(body, "displayName", batch.name)
        if batch.metadata:
            body["labels"] = dict(batch.metadata)
        if batch.model is not None:
            whole = f"projects/{project}/locations/{location}/publishers/google/models/{batch.model}"
            body["model"] = batch.model if "/" in batch.model else whole
    elif dialect == "bedrock":
        _set(body, "jobName", batch.name)
        _set(body, "modelId", batch.model)
    return body


def _set(body: dict[str, Any], key: str, value: str | None) -> None:
    if value is not None:
        body[key] = value


def _prefixed(value: str, prefix: str) -> str:
    return value if value.startswith(prefix) else prefix + value
