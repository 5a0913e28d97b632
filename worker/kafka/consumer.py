"""The poll loop: fetch commands, hand them off, keep polling, commit the watermark, survive rebalances.

A newly assigned partition takes in no command until its live follows are read back from the follow-state
topic and resumed (``FollowStore.read``); a revoked one stops its follows after writing what they owe, so the
next owner resumes them instead of cancelling again. Shutdown is the same as revoking every partition: it
does not wait for batches to end.

Three rules from aiokafka's behaviour shape this module:

* ``getmany`` is called continuously, even while every partition is paused, because a member that stops
  polling for ``max_poll_interval_ms`` leaves the group (aiokafka#848) and its work is redelivered.
  Back-pressure is ``pause()``, which never triggers a rebalance.
* Commits happen only in the commit loop and the revoke callback, and only for offsets whose commands are
  done with: intent durable on the follow-state topic, or outcome published (see ``offsets.py``).
* aiokafka rebalances eagerly and does not call ``on_partitions_revoked`` before ``stop()``, so shutdown
  commits explicitly before leaving the group.
* aiokafka calls no callback while it cannot reach the group coordinator, though the coordinator removes the
  member a session timeout after its last heartbeat. A member without an answered heartbeat for nearly that
  long presumes its partitions lost and stops their follows without writing (``membership.py``); if it turns
  out to be still in the group, it takes them back as if newly assigned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CoordinatorNotAvailableError, KafkaError

from worker.config import Settings
from worker.kafka.connection import client_kwargs, stop_client
from worker.kafka.membership import Membership, observe_heartbeats
from worker.kafka.offsets import PartitionOffsets
from worker.kafka.seams import CommandSink, ConsumerClient, FollowOwner, FollowReader
from worker.retry import retry_until_done
from worker.telemetry import metrics

__all__ = ["CommandConsumer", "kafka_consumer"]

log = logging.getLogger("worker.kafka.consumer")

#: Records being dead-lettered at once, at most (each is a task; see ``_apply_backpressure``).
MAX_DEAD_LETTERING = 2_000
#: Resume intake once in-flight work falls below this share of ``max_in_flight``.
RESUME_RATIO = 0.9
#: At shutdown a commit gets this long; what it cannot commit is redelivered to the next owner.
SHUTDOWN_COMMIT_TIMEOUT_S = 10.0
#: A failed read of follows is retried after a wait doubling from the first to the last.
RESTORE_WAIT_FIRST_S = 0.5
RESTORE_WAIT_MAX_S = 5.0
#: How often the membership fence looks at the age of the last answered heartbeat.
FENCE_CHECK_S = 0.1


class _CoordinatorNotYetAvailable(logging.Filter):
    """aiokafka logs "Group Coordinator Request failed: GroupCoordinatorNotAvailableError" as an ERROR and
    retries. It is normal while a new group's coordinator is being set up (a fresh broker creating
    ``__consumer_offsets``) or is moving, so it is said at INFO; a coordinator that never comes shows as
    ``/readyz`` failing ``group_joined``. Every other coordinator error keeps its level."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and any(isinstance(a, CoordinatorNotAvailableError) for a in _args(record)):
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args = "group coordinator not available yet (%s); retrying", record.args
        return True


def _args(record: logging.LogRecord) -> tuple[object, ...]:
    return record.args if isinstance(record.args, tuple) else ()


_COORDINATOR_LOG = logging.getLogger("aiokafka.consumer.group_coordinator")
_COORDINATOR_FILTER = _CoordinatorNotYetAvailable()


def kafka_consumer(settings: Settings) -> ConsumerClient:
    """The group member: commits only what ``CommandConsumer`` says, never on its own (no auto-commit)."""
    _COORDINATOR_LOG.addFilter(_COORDINATOR_FILTER)  # adding the same filter again is a no-op
    consumer: ConsumerClient = AIOKafkaConsumer(
        **client_kwargs(settings),
        group_id=settings.group_id,
        group_instance_id=settings.group_instance_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_interval_ms=settings.max_poll_interval_ms,
        session_timeout_ms=settings.session_timeout_ms,
        # Six heartbeats per session (aiokafka's default is 3 s whatever the session): the membership fence
        # presumes the partitions lost after 80 % of the session without an answer, so one slow or lost
        # heartbeat must not be enough to get there.
        heartbeat_interval_ms=max(100, settings.session_timeout_ms // 6),
        rebalance_timeout_ms=max(settings.session_timeout_ms, 30_000),
        max_poll_records=500,
    )
    return consumer


class CommandConsumer:
    """Polls ``consumer``, hands records to ``sink``, and keeps ``follows`` in step with the assignment.

    The worker passes ``kafka_consumer(settings)`` and its ``Dispatcher`` as both ``sink`` and ``follows``;
    unit tests pass fakes of the protocols in ``seams.py``.
    """

    def __init__(
        self,
        settings: Settings,
        consumer: ConsumerClient,
        *,
        sink: CommandSink,
        follows: FollowOwner,
        store: FollowReader,
        membership: Membership | None = None,
    ) -> None:
        self._settings = settings
        self._consumer = consumer
        self._sink = sink
        self._follows = follows
        self._store = store
        self._partitions: dict[TopicPartition, PartitionOffsets] = {}
        self._restoring: set[TopicPartition] = set()
        self._restores: set[asyncio.Task[None]] = set()
        self._paused = False
        self._commit_lock = asyncio.Lock()
        self._membership = membership
        self._fenced: set[TopicPartition] = set()
        self.joined = asyncio.Event()

    async def start(self) -> None:
        await self._consumer.start()
        if self._membership is None:
            membership = Membership(self._settings.session_timeout_ms / 1000)
            if observe_heartbeats(self._consumer, membership):
                self._membership = membership
            elif isinstance(self._consumer, AIOKafkaConsumer):
                log.warning("cannot observe heartbeats: a worker cut off from Kafka is not fenced from its partitions")
        self._consumer.subscribe([self._settings.commands_topic], listener=_Listener(self))

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set, then drain, commit and leave the group."""
        committer = asyncio.create_task(self._commit_loop(stop), name="commit loop")
        fence = asyncio.create_task(self._fence_loop(stop), name="membership fence")
        try:
            while not stop.is_set():
                await self._poll_once()
            await self._hand_over()
        finally:
            for task in (committer, fence):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for task in self._restores:
                task.cancel()
            await self._sink.stop_intake()  # again for the error path (``_hand_over`` did it on a normal stop)
            await self._follows.close()
            await self._final_commit()
            await self._stop_consumer()

    async def _stop_consumer(self) -> None:
        """Leave the group (``stop_client``: clean even when aiokafka's fetcher leaks a CancelledError)."""
        await stop_client(self._consumer, "commands consumer")

    async def _poll_once(self) -> None:
        self._apply_backpressure()
        batch = await self._consumer.getmany(timeout_ms=200, max_records=500)
        for tp, records in batch.items():
            offsets = self._partitions.get(tp)
            if offsets is None:  # revoked while the fetch was in flight
                continue
            if tp in self._restoring:  # fetched before the pause took effect: read it again after the restore
                self._consumer.seek(tp, records[0].offset)
                continue
            for record in records:
                offsets.started(record.offset)
                self._sink.submit(record, offsets)

    def _apply_backpressure(self) -> None:
        in_flight = self._sink.in_flight
        limit = self._settings.max_in_flight
        # A valid command is joined within ``submit``; a record being dead-lettered is a task, and a burst of
        # 100,000 bad records would be 100,000 tasks at once. Taking in while at most MAX_DEAD_LETTERING are
        # in progress costs nothing in latency (they finish in ms).
        if self._sink.dead_lettering >= MAX_DEAD_LETTERING:
            in_flight = max(in_flight, limit)
        if not self._paused and in_flight >= limit:
            self._consumer.pause(*self._partitions)
            self._paused = True
            metrics.PAUSED_PARTITIONS.set(len(self._partitions))
            log.info("paused intake: %d commands in flight (limit %d)", in_flight, limit)
        elif self._paused and in_flight < limit * RESUME_RATIO:
            self._consumer.resume(*(tp for tp in self._partitions if tp not in self._restoring))
            self._paused = False
            metrics.PAUSED_PARTITIONS.set(0)
            log.info("resumed intake: %d commands in flight", in_flight)

    async def _hand_over(self) -> None:
        """SIGTERM: take nothing new, let calls on the wire finish, write what is owed, commit. Follows move
        to the next owner through the follow-state topic; nothing waits for a batch to end."""
        self._consumer.pause(*self._partitions)
        self._paused = True
        log.info(
            "stopping: %d follows hand over (up to %.0fs for calls on the wire)",
            self._follows.following,
            self._settings.shutdown_grace_s,
        )
        keepalive = asyncio.create_task(self._poll_while_draining(), name="drain poll")
        try:
            await self._sink.stop_intake()
            await self._follows.close(self._settings.shutdown_grace_s)
            await self._final_commit()
        finally:
            keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keepalive

    async def _poll_while_draining(self) -> None:
        while True:
            self._consumer.pause(*self._partitions)
            await self._consumer.getmany(timeout_ms=200)

    async def _commit_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(self._settings.commit_interval_s)
            await self._commit()
            for tp, offsets in self._partitions.items():
                metrics.COMMIT_LAG.labels(str(tp.partition)).set(offsets.lag)

    async def _fence_loop(self, stop: asyncio.Event) -> None:
        membership = self._membership
        if membership is None:
            return
        while not stop.is_set():
            await asyncio.sleep(FENCE_CHECK_S)
            if not self._fenced and self._partitions and membership.lapsed():
                await self._fence(membership)
            elif self._fenced and not membership.lapsed():
                await self._unfence(membership)

    async def _fence(self, membership: Membership) -> None:
        """No heartbeat answered for nearly a session: another member may own these partitions any moment.
        Stop their follows now (no call starts, nothing more is written: the next owner resumes from the
        follow-state topic) and commit nothing more for them; their commands are redelivered as on a crash."""
        lost = dict(self._partitions)
        self._fenced = set(lost)
        numbers = sorted(tp.partition for tp in lost)
        log.warning(
            "no heartbeat answered for %.1fs (session timeout %.1fs): partitions %s are presumed taken over; "
            "their follows stop without writing until the group says otherwise",
            membership.age,
            self._settings.session_timeout_ms / 1000,
            numbers,
        )
        metrics.FENCED.inc()
        self._consumer.pause(*lost)
        self._restoring -= set(lost)
        await self._follows.stop_partitions(numbers, 0.0)
        for tp, offsets in lost.items():
            offsets.revoked = True
            if self._partitions.get(tp) is offsets:  # not re-assigned meanwhile
                del self._partitions[tp]

    async def _unfence(self, membership: Membership) -> None:
        """A heartbeat was answered after all: the group never removed this member. Take the fenced partitions
        back as if newly assigned (their follows from the follow-state topic, their commands from the
        committed offset)."""
        back, self._fenced = {tp for tp in self._fenced if tp not in self._partitions}, set()
        if not back:
            return
        log.warning(
            "heartbeat answered again: partitions %s are still ours, taking them back",
            sorted(tp.partition for tp in back),
        )
        await self._consumer.seek_to_committed(*back)
        self._assigned(back)

    async def _final_commit(self) -> None:
        """Commit at shutdown, but never wait forever: with the broker gone aiokafka's commit waits for a
        coordinator until ``stop()``, which comes after it, so SIGTERM would end only in SIGKILL."""
        try:
            await asyncio.wait_for(self._commit(), SHUTDOWN_COMMIT_TIMEOUT_S)
        except TimeoutError:
            log.warning(
                "final commit timed out after %.0fs; uncommitted commands will be redelivered",
                SHUTDOWN_COMMIT_TIMEOUT_S,
            )

    async def _commit(self, only: set[TopicPartition] | None = None) -> None:
        async with self._commit_lock:  # one commit at a time: a retried older commit must not land after a newer
            await self._commit_now(only)

    async def _commit_now(self, only: set[TopicPartition] | None) -> None:
        pending = {
            tp: o
            for tp, p in self._partitions.items()
            if (only is None or tp in only) and (o := p.to_commit()) is not None
        }
        if not pending:
            return
        try:
            await self._consumer.commit(pending)
        except KafkaError as exc:  # CommitFailedError during a rebalance, coordinator moves: retried next tick
            log.warning("commit of %d partitions failed (%s); will retry", len(pending), exc)
            return
        for tp, offset in pending.items():
            if tp in self._partitions:
                self._partitions[tp].committed(offset)

    async def _revoked(self, revoked: set[TopicPartition]) -> None:
        for task in list(self._restores):
            task.cancel()
        await asyncio.gather(*self._restores, return_exceptions=True)
        numbers = sorted(tp.partition for tp in revoked)
        await self._sink.stop_intake(numbers)
        await self._follows.stop_partitions(numbers, self._settings.shutdown_grace_s)
        await self._commit(only=revoked)
        self._restoring -= revoked
        if self._restoring:  # kept partitions whose restore was interrupted above: read them again
            again, self._restoring = set(self._restoring), set()
            # Fresh PartitionOffsets for them too: correct only because a partition still restoring has taken
            # no command in (it stays paused until its follows are back), so there is nothing to lose.
            self._assigned(again)
        for tp in revoked:
            offsets = self._partitions.pop(tp, None)
            if offsets is not None:
                offsets.revoked = True
            with contextlib.suppress(KeyError):  # never reported for this partition
                metrics.COMMIT_LAG.remove(str(tp.partition))
        log.info("partitions revoked: %s", numbers, extra={"event": "partitions_revoked", "partitions": numbers})

    def _assigned(self, assigned: set[TopicPartition]) -> None:
        if self._membership is not None:
            self._membership.proved()  # a completed join: the coordinator counts this member in
        self._fenced -= assigned
        for tp in assigned:
            self._partitions[tp] = PartitionOffsets()
        fresh = {tp for tp in assigned if tp not in self._restoring}
        if fresh:
            self._consumer.pause(*fresh)  # no command before its partition's follows are back
            self._restoring |= fresh
            task = asyncio.create_task(self._restore(fresh), name="restore follows")
            self._restores.add(task)
            task.add_done_callback(self._restores.discard)
        self.joined.set()
        numbers = sorted(tp.partition for tp in assigned)
        log.info("partitions assigned: %s", numbers, extra={"event": "partitions_assigned", "partitions": numbers})

    async def _restore(self, partitions: set[TopicPartition]) -> None:
        """Read the follows of newly assigned partitions and resume them, then let their commands in.

        A failed read is retried: taking commands in without the follows would cancel every batch again.
        """
        started = time.monotonic()
        numbers = sorted(tp.partition for tp in partitions)

        def failed(attempt: int, exc: BaseException, wait_s: float) -> None:
            log.warning("reading follows of %s failed (%s); retrying in %.1fs", numbers, exc, wait_s)

        states = await retry_until_done(
            lambda: self._store.read(numbers),
            retry_if=lambda exc: isinstance(exc, (KafkaError, OSError, TimeoutError)),
            on_retry=failed,
            wait_first_s=RESTORE_WAIT_FIRST_S,
            wait_max_s=RESTORE_WAIT_MAX_S,
        )
        resumed = 0
        for tp in partitions:
            if tp not in self._partitions or tp not in self._restoring:
                continue  # revoked meanwhile
            resumed += self._follows.resume(tp.partition, states.get(tp.partition, []))
            self._restoring.discard(tp)
            if not self._paused:
                self._consumer.resume(tp)
        took = time.monotonic() - started
        metrics.RESTORE_SECONDS.observe(took)
        log.info(
            "resumed %d follows of partitions %s in %.2fs",
            resumed,
            numbers,
            took,
            extra={"event": "follows_resumed", "follows": resumed, "partitions": numbers, "seconds": round(took, 3)},
        )


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: CommandConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._owner._revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._owner._assigned(assigned)
