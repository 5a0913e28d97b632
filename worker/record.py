"""What the worker reads of a consumed Kafka record: aiokafka's ``ConsumerRecord`` fits, and so do test fakes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

__all__ = ["Record"]


class Record(Protocol):
    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def timestamp(self) -> int: ...
