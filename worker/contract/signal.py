"""The signal record: a provider told us a batch changed (a verified webhook or EventBridge event).

Written by the webhook receiver (``worker.webhooks``) to the signals topic, keyed by ``batch_key`` so every
signal about one batch keeps its order, before the receiver answers the provider 2xx. A signal is a hint, never
an outcome: the worker that follows the batch polls it at once and the provider's answer decides (docs/push.md).
``event`` is the provider's own word (``batch.cancelled``, Bedrock's ``Stopped``), kept for logs and metrics.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from worker.contract.types import BatchId, Name, batch_key

__all__ = ["BatchSignal", "decode_signal", "encode_signal"]

Word = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class BatchSignal(BaseModel):
    """The value of a record on the signals topic."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="BatchSignal")

    schema_version: Literal[1] = 1
    provider: Name = Field(description="The configured provider the delivery came for (the route's).")
    account: Name = Field(description="The configured account the delivery came for (the route's).")
    batch_id: BatchId = Field(description="As commands carry it: Gemini's without 'batches/', Bedrock's job id.")
    event: Word = Field(description="What the provider said: the webhook's type, or Bedrock's detail.status.")
    delivery_id: Word = Field(description="The webhook-id, or the EventBridge event id: one per provider event.")
    occurred_at: AwareDatetime | None = Field(None, description="The provider's time of the change, when it says.")
    received_at: AwareDatetime = Field(description="When the receiver verified the delivery.")

    @property
    def key(self) -> str:
        return batch_key(self.provider, self.account, self.batch_id)


def encode_signal(signal: BatchSignal) -> bytes:
    return signal.model_dump_json().encode()


def decode_signal(value: bytes) -> BatchSignal:
    """Raises ``pydantic.ValidationError`` for a record this version cannot read."""
    return BatchSignal.model_validate_json(value)
