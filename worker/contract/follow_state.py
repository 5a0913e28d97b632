"""The follow-state record: what a new owner of a commands partition needs to resume a follow without
cancelling again.

One record per live follow on the follow-state topic (``BCW_FOLLOWS_TOPIC``, compacted), keyed by the batch
key, on the same partition number as the commands it came from; a tombstone (null value) when the follow
ends. A command's offset is committed once a record naming it is acknowledged by every in-sync replica, so
this record, not an uncommitted offset, is where a follow's durability lives.

Deadlines are wall-clock times: a monotonic clock means nothing in another process. Each waiting command
keeps the last status it was told, so a new owner publishes only what is new to it (no event repeated on a
clean handover), and its trace context, so events published after a move still continue the publisher's
trace.

Size is bounded: at most ``MAX_WAITING`` waiting commands per record. A command that finds its batch's
record full is followed all the same but is not written to it; its offset is then committed only after its
final event (the way every command was before durable follows), so it is never lost, only redelivered on a
move. Such a batch is one a publisher asked to cancel more than 64 times while it was still cancelling.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from worker.contract.types import BatchId, BatchStatus, CommandId, Name, batch_key

__all__ = ["MAX_WAITING", "FollowState", "WaitingCommand", "decode_follow_state", "encode_follow_state"]

#: Waiting commands one record holds; 64 entries of ~300 bytes keep a record near 20 KiB at most.
MAX_WAITING = 64

TraceHeader = Annotated[str, StringConstraints(max_length=512)]


class WaitingCommand(BaseModel):
    """One command waiting for the batch's final state."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command_id: CommandId
    deadline: AwareDatetime | None = Field(
        description="Wall-clock time after which the command ends as gave_up/follow_timeout; null: the worker cap."
    )
    last_status: BatchStatus | None = Field(description="The status this command was last told (previous_status).")
    follow: bool = Field(True, description="False: the command ends with the first state it hears.")
    traceparent: TraceHeader | None = Field(None, description="W3C trace context of the command's span.")
    tracestate: TraceHeader | None = None
    received_at: float | None = Field(None, description="The command's Kafka timestamp, Unix seconds (latency).")


class FollowState(BaseModel):
    """The value of a follow-state record (absent value = tombstone: the follow ended)."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="FollowState")

    schema_version: Literal[1] = 1
    provider: Name
    account: Name
    batch_id: BatchId
    cancel_accepted: bool = Field(
        description="The provider answered the cancel (accepted, or already finished): a new owner does not send it."
    )
    already_terminal: bool = Field(False, description="The batch had finished before the cancel arrived.")
    last_status: BatchStatus | None = Field(description="The last status the worker observed.")
    provider_status: str | None = Field(None, max_length=200)
    since: AwareDatetime = Field(description="When the follow started.")
    updated_at: AwareDatetime = Field(description="When this record was written.")
    waiting: list[WaitingCommand] = Field(min_length=1, max_length=MAX_WAITING)

    @property
    def key(self) -> str:
        return batch_key(self.provider, self.account, self.batch_id)


def encode_follow_state(state: FollowState) -> bytes:
    return state.model_dump_json(exclude_defaults=False).encode()


def decode_follow_state(value: bytes) -> FollowState:
    """Raises ``pydantic.ValidationError`` for a record this version cannot read."""
    return FollowState.model_validate_json(value)
