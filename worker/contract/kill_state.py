"""The standing-kill record: what the next owner of a commands partition needs to keep a kill standing.

Kept on the follow-state topic beside follows (same partition number as the selector command, compacted), keyed
``{provider}/{account}/*/{command_id}`` (``kill_key``) and told apart from a follow's record by ``kind: "kill"``;
a tombstone when the kill ends. ``ended`` is written before the kill's final event, so a kill lifted (or run out)
just before a crash is finished by the next owner instead of standing again.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from worker.contract.event import FailureDetail
from worker.contract.follow_state import FollowState, decode_follow_state
from worker.contract.selector import SelectorCommand, selector_key

__all__ = ["KillState", "decode_kept", "encode_kill_state", "kill_key"]

TraceHeader = Annotated[str, StringConstraints(max_length=512)]


def kill_key(provider: str, account: str, command_id: str) -> str:
    return f"{selector_key(provider, account)}/{command_id}"


class KillState(BaseModel):
    """The value of a standing kill's record on the follow-state topic."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="KillState")

    kind: Literal["kill"] = "kill"
    schema_version: Literal[1] = 1
    selector: SelectorCommand
    sweeps: int = Field(ge=0, description="Sweeps done so far.")
    published: int = Field(ge=0, description="Child cancel commands published so far.")
    started_at: AwareDatetime
    updated_at: AwareDatetime
    ended: FailureDetail | None = Field(None, description="Set once the kill ends (until passed, or lifted).")
    traceparent: TraceHeader | None = None
    tracestate: TraceHeader | None = None

    @property
    def key(self) -> str:
        return kill_key(self.selector.provider, self.selector.account, self.selector.command_id)


_KILL_PREFIX = b'{"kind":"kill"'


def encode_kill_state(state: KillState) -> bytes:
    """``kind`` comes first in the JSON, which is how ``decode_kept`` tells a kill from a follow cheaply."""
    return state.model_dump_json().encode()


def decode_kept(value: bytes) -> FollowState | KillState:
    """A follow-state topic record: a kill (ours start with ``{"kind":"kill"``) or a follow. A restore reads
    every record of a partition, up to 100,000 follows, so this looks at the first bytes rather than parsing
    twice. Raises ``pydantic.ValidationError`` for a record this version cannot read."""
    if value.startswith(_KILL_PREFIX):
        return KillState.model_validate_json(value)
    return decode_follow_state(value)
