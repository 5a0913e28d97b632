"""What the consumer sees as the owner of a partition's kept state: follows go to the follow engine, standing
kills to ``Selectors``. Both live on the follow-state topic and move together with the commands partition."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Protocol

from worker.contract import FollowState, KillState
from worker.sweep.service import Selectors

__all__ = ["KeptState"]


class _Follows(Protocol):
    @property
    def following(self) -> int: ...
    def resume(self, partition: int, states: Iterable[FollowState]) -> int: ...
    async def stop_partitions(self, partitions: Sequence[int], grace: float) -> None: ...
    async def close(self, grace: float = 0.0) -> None: ...


class KeptState:
    """The consumer's ``FollowOwner``: splits a partition's records between follows and kills."""

    def __init__(self, follows: _Follows, selectors: Selectors) -> None:
        self._follows = follows
        self._selectors = selectors

    @property
    def following(self) -> int:
        return self._follows.following

    def resume(self, partition: int, states: Iterable[FollowState | KillState]) -> int:
        follows: list[FollowState] = []
        kills: list[KillState] = []
        for state in states:
            (kills if isinstance(state, KillState) else follows).append(state)  # type: ignore[arg-type]
        return self._follows.resume(partition, follows) + self._selectors.resume(partition, kills)

    async def stop_partitions(self, partitions: Sequence[int], grace: float) -> None:
        await asyncio.gather(
            self._follows.stop_partitions(partitions, grace), self._selectors.stop_partitions(partitions, grace)
        )

    async def close(self, grace: float = 0.0) -> None:
        await asyncio.gather(self._follows.close(grace), self._selectors.close(grace))
