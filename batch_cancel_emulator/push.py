"""The emulator pushes: batches that change state are delivered to a registered URL, as the providers do.

A ``PushTarget`` per dialect (openai, gemini, bedrock; ``POST /_admin/push``) says where, with which secret and
which retry policy. ``Pusher.observe`` is told of every request that touched a batch; a change of the batch's
shown status becomes an event (``push_events.build_event``) queued for delivery.

A delivery must go out when the batch reaches its state even if nobody polls it, so a cancel whose end is
timed (``Scenario.cancelling_s``) is put on one heap, and one loop timer (``loop.call_at`` for the earliest
entry, re-armed as the heap changes) ends the due batches — 10,000 batches cancelling at once are 10,000 heap
entries, not 10,000 sleeping tasks. Retries wait on the same heap. Sending is a fixed pool of tasks reading
one queue over one aiohttp session, so deliveries never hold up the emulator's request handling and their
concurrency is bounded (``--push-concurrency``). aiohttp, not httpx: in a benchmark the emulator is the client
of the receiver, and on this machine (client and a loopback aiohttp server in one process, 16 connections) a
POST took 3.5 ms with httpx's pool and 0.45 ms with aiohttp's. A cancel ended by polls (``cancelling_polls``)
is delivered when the poll that ends it is answered.

Each attempt is recorded (``GET /_admin/deliveries``) without its headers, so no secret is ever read back.
Retries: non-2xx or a transport error, with exponential backoff per target, the same event (id and body) on
every attempt and a fresh timestamp and signature. Bedrock retries what EventBridge API destinations retry
(401, 407, 409, 429, 5xx, timeouts and connection errors) and drops any other 4xx; OpenAI and Gemini retry
every failure.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from batch_cancel_emulator import push_events
from batch_cancel_emulator.model import Batch

__all__ = ["DEFAULT_CONCURRENCY", "DeliveryError", "Post", "PushRetry", "PushTarget", "Pusher"]

log = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 64
DEFAULT_BEDROCK_HEADER = "x-bcw-token"
_RECORDS_MAX = 1_000_000
_FIRE_CHUNK = 500  # heap entries handled per timer callback before yielding to request handling
_BEDROCK_RETRIED = frozenset({401, 407, 409, 429})


class DeliveryError(Exception):
    """An attempt that got no HTTP answer (connection refused or reset, timeout); its text is recorded."""


#: ``post(url, body, headers, timeout_s) -> HTTP status``; raises ``DeliveryError`` when no answer came.
Post = Callable[[str, bytes, dict[str, str], float], Awaitable[int]]


class PushRetry(BaseModel):
    """How a target's failed deliveries are retried: waits of ``initial_s * factor**n`` capped at
    ``max_interval_s``, until ``max_attempts`` attempts were made or ``deadline_s`` passed since the first."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    initial_s: float = Field(5.0, gt=0, le=3600)
    factor: float = Field(2.0, ge=1, le=10)
    max_interval_s: float = Field(600.0, gt=0, le=86_400)
    max_attempts: int = Field(10, ge=1, le=1000)
    deadline_s: float | None = Field(None, gt=0, le=7 * 86_400)

    def wait_after(self, attempts: int) -> float:
        """The wait before attempt ``attempts + 1``."""
        return float(min(self.initial_s * self.factor ** (attempts - 1), self.max_interval_s))


class PushTarget(BaseModel):
    """Where one dialect's events go: ``url``, the ``secret`` (Standard Webhooks for openai/gemini; the API-key
    header value for bedrock, sent as ``header``), the retry policy and the per-attempt timeout."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dialect: Literal["openai", "gemini", "bedrock"]
    url: str = Field(min_length=8, max_length=2048)
    secret: str = Field(min_length=1, max_length=4096, repr=False)
    header: str | None = Field(None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9-]+$")
    retry: PushRetry = Field(default_factory=PushRetry)
    timeout_s: float | None = Field(None, gt=0, le=120, description="default: 5 (EventBridge's limit), else 10")

    @field_validator("url")
    @classmethod
    def _http(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("url must be http(s)")
        return url

    @model_validator(mode="after")
    def _fits_dialect(self) -> PushTarget:
        if self.header is not None and self.dialect != "bedrock":
            raise ValueError("header is for bedrock only (OpenAI and Gemini sign with Standard Webhooks)")
        if self.dialect != "bedrock":
            push_events.signing_key(self.dialect, self.secret)  # refuse an unusable secret now, not per attempt
        return self

    @property
    def key(self) -> bytes | None:
        return None if self.dialect == "bedrock" else push_events.signing_key(self.dialect, self.secret)

    @property
    def header_name(self) -> str | None:
        return (self.header or DEFAULT_BEDROCK_HEADER).lower() if self.dialect == "bedrock" else None

    @property
    def timeout(self) -> float:
        return self.timeout_s if self.timeout_s is not None else (5.0 if self.dialect == "bedrock" else 10.0)


@dataclass(slots=True)
class _Job:
    event: push_events.Event
    changed_wall: float
    changed_mono: float
    generation: int
    attempts: int = 0
    first_mono: float | None = None


@dataclass(slots=True)
class _Advance:
    dialect: str
    batch_id: str


@dataclass
class Pusher:
    """Push targets, the heap of what is due (timed cancels ending, retries), the senders and their records."""

    batches: Callable[[str, str], Batch | None]
    concurrency: int = DEFAULT_CONCURRENCY
    post: Post | None = None  # the one seam to the network; None: aiohttp (unit tests pass a fake)
    targets: dict[str, PushTarget] = field(default_factory=dict)
    records: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=_RECORDS_MAX))
    recorded: int = 0  # attempts ever recorded, so `since` stays valid when the deque drops old ones
    counts: Counter[str] = field(default_factory=Counter)
    _heap: list[tuple[float, int, _Job | _Advance]] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=itertools.count)
    _timer: asyncio.Handle | None = None
    _timer_at: float = 0.0
    _queue: asyncio.Queue[_Job] | None = None
    _senders: list[asyncio.Task[None]] = field(default_factory=list)
    _session: aiohttp.ClientSession | None = None
    _generation: int = 0

    def register(self, target: PushTarget) -> None:
        self.targets[target.dialect] = target

    def unregister(self, dialect: str) -> None:
        self.targets.pop(dialect, None)

    def reset(self) -> None:
        """Forget targets, pending work and records; attempts in flight finish unrecorded."""
        self.targets.clear()
        self.records.clear()
        self.recorded = 0
        self.counts.clear()
        self._heap.clear()
        self._generation += 1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._queue is not None:
            while not self._queue.empty():
                self._queue.get_nowait()

    def observe(self, batch: Batch, before_status: str, before_shown: str) -> None:
        """A request touched ``batch``: queue the event its change of shown status makes, and put a timed
        cancel that just started on the heap. Costs one dict lookup for a dialect nobody pushes."""
        if batch.dialect not in self.targets:
            return
        if batch.shown_status != before_shown:
            self._changed(batch, before_shown)
        if batch.status == "cancelling" and before_status != "cancelling":
            due = batch.cancel_due_mono()
            if due is not None:
                self._push(due, _Advance(batch.dialect, batch.id))

    def stats(self) -> dict[str, Any]:
        def by(what: str) -> dict[str, int]:
            return {k.partition(":")[2]: v for k, v in self.counts.items() if k.startswith(f"{what}:")}

        return {
            "targets": sorted(self.targets),
            "events": by("events"),
            "attempts": by("attempts"),
            "delivered": by("delivered"),
            "failed_attempts": by("failed"),
            "undelivered": by("undelivered"),
            "pending": len(self._heap) + (self._queue.qsize() if self._queue is not None else 0),
        }

    # --- due work: one timer for the earliest heap entry ------------------------------------------------------
    def _push(self, due: float, item: _Job | _Advance) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), item))
        self._arm()

    def _arm(self) -> None:
        if not self._heap:
            return
        due = self._heap[0][0]
        if self._timer is not None:
            if self._timer_at <= due:
                return
            self._timer.cancel()
        self._timer, self._timer_at = asyncio.get_running_loop().call_at(due, self._fire), due

    def _fire(self) -> None:
        self._timer = None
        now = time.monotonic()
        for _ in range(_FIRE_CHUNK):
            if not self._heap or self._heap[0][0] > now:
                break
            _, _, item = heapq.heappop(self._heap)
            if isinstance(item, _Job):
                self._enqueue(item)
            else:
                self._advance(item, now)
        if self._heap and self._heap[0][0] <= now:  # more due: let requests in between, then go on
            if self._timer is not None:  # armed while this ran (a not-quite-due entry went back on the heap)
                self._timer.cancel()
            self._timer, self._timer_at = asyncio.get_running_loop().call_soon(self._fire), now
        else:
            self._arm()

    def _advance(self, item: _Advance, now: float) -> None:
        batch = self.batches(item.dialect, item.batch_id)
        if batch is None or batch.dialect not in self.targets:
            return
        due = batch.cancel_due_mono()
        if due is None:  # no longer cancelling (a poll ended it, and its delivery went out then)
            return
        if due > now:  # the loop's clock rounds: not quite due yet
            self._push(due, item)
            return
        before = batch.shown_status
        batch.retrieve()
        if batch.shown_status != before:
            self._changed(batch, before)

    def _changed(self, batch: Batch, before: str) -> None:
        now_wall, now_mono = time.time(), time.monotonic()
        event = push_events.build_event(batch, before, batch.shown_status, now_wall)
        if event is None:
            return
        self.counts[f"events:{batch.dialect}"] += 1
        self._enqueue(_Job(event, now_wall, now_mono, self._generation))

    # --- sending: a fixed pool of tasks over one client ----------------------------------------------------------
    def _enqueue(self, job: _Job) -> None:
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._senders = [asyncio.create_task(self._sender()) for _ in range(self.concurrency)]
        self._queue.put_nowait(job)

    async def _sender(self) -> None:
        assert self._queue is not None
        while True:
            job = await self._queue.get()
            try:
                await self._attempt(job)
            except Exception:  # a bug here must not silently stop one of the senders
                log.exception("push delivery of %s failed unexpectedly", job.event.delivery_id)

    async def _attempt(self, job: _Job) -> None:
        event = job.event
        target = self.targets.get(event.dialect)
        if target is None or job.generation != self._generation:
            return  # unregistered or reset since the event was made: nobody to deliver to
        job.attempts += 1
        start_wall, start_mono = time.time(), time.monotonic()
        job.first_mono = job.first_mono or start_mono
        timestamp = int(start_wall)
        sent = push_events.headers(
            event, key=target.key, header=target.header_name, secret=target.secret, timestamp=timestamp
        )
        status: int | None = None
        error: str | None = None
        try:
            status = await (self.post or self._aiohttp_post)(target.url, event.body, sent, target.timeout)
        except DeliveryError as exc:
            error = str(exc)
        if job.generation != self._generation:
            return
        ok = status is not None and 200 <= status < 300
        outcome = "delivered" if ok else self._retry_or_give_up(job, target, status)
        self.counts[f"attempts:{event.dialect}"] += 1
        self.counts[f"{'delivered' if ok else 'failed'}:{event.dialect}"] += 1
        if outcome in ("gave_up", "dropped"):
            self.counts[f"undelivered:{event.dialect}"] += 1
        self.recorded += 1
        self.records.append(
            {
                "seq": self.recorded,
                "dialect": event.dialect,
                "batch_id": event.batch_id,
                "event": event.kind,
                "delivery_id": event.delivery_id,
                "attempt": job.attempts,
                "url": target.url,
                "status": status,
                "error": error,
                "outcome": outcome,
                "webhook_timestamp": None if event.dialect == "bedrock" else timestamp,
                "t_wall": start_wall,
                "t_mono": start_mono,
                "t_done_mono": time.monotonic(),
                "changed_wall": job.changed_wall,
                "changed_mono": job.changed_mono,
            }
        )

    async def _aiohttp_post(self, url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> int:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.concurrency),
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
            )
        try:
            async with self._session.post(
                url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout_s), allow_redirects=False
            ) as response:
                await response.read()
                return response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}"[:300]) from exc

    def _retry_or_give_up(self, job: _Job, target: PushTarget, status: int | None) -> str:
        """``retry`` (and put the job back on the heap), ``gave_up`` (attempts or time spent) or ``dropped``."""
        if target.dialect == "bedrock" and status is not None and status < 500 and status not in _BEDROCK_RETRIED:
            return "dropped"  # EventBridge API destinations do not retry any other 1xx-4xx answer
        policy = target.retry
        due = time.monotonic() + policy.wait_after(job.attempts)
        over = policy.deadline_s is not None and due - (job.first_mono or due) > policy.deadline_s
        if job.attempts >= policy.max_attempts or over:
            return "gave_up"
        self._push(due, job)
        return "retry"

    def deliveries(self, since: int, dialect: str | None, batch_id: str | None) -> list[dict[str, Any]]:
        offset = self.recorded - len(self.records)
        entries = list(itertools.islice(self.records, max(since - offset, 0), None))
        return [
            e
            for e in entries
            if (dialect is None or e["dialect"] == dialect) and (batch_id is None or e["batch_id"] == batch_id)
        ]
