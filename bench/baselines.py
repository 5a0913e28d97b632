"""The two yardsticks the worker is compared with, each run as its own process like the worker.

``python -m bench.baselines naive ...`` is the loop a user would write instead of the worker: take one
command, cancel it with httpx, poll with a sleep until it is terminal, publish the outcome, commit, next.

``python -m bench.baselines relay ...`` is the ceiling of the Kafka pipe: consume commands and publish two
events per command (as the worker does: ``cancelling`` then the final state), commit, with no HTTP at all.

Both publish the CloudEvents headers the benchmark's observer reads (``ce_commandid``, ``ce_outcome``),
stop after ``--count`` commands or ``--seconds``, whichever comes first, and print one summary line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from batch_cancel_emulator.testing import DEFAULT_KEY

TERMINAL = frozenset({"cancelled", "completed", "failed", "expired"})
MAX_POLLS = 1000


def _clients(args: argparse.Namespace) -> tuple[AIOKafkaConsumer, AIOKafkaProducer]:
    consumer = AIOKafkaConsumer(
        args.commands,
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    return consumer, producer


def _headers(command_id: str, outcome: str | None) -> list[tuple[str, bytes]]:
    headers = [("ce_commandid", command_id.encode())]
    return headers + ([("ce_outcome", outcome.encode())] if outcome else [])


async def naive(args: argparse.Namespace) -> None:
    """One command at a time, exactly as the task reads: getone → cancel → poll with sleep → produce → commit."""
    consumer, producer = _clients(args)
    await consumer.start()
    await producer.start()
    deadline = time.monotonic() + args.seconds
    done = 0
    try:
        async with httpx.AsyncClient(
            base_url=args.url, headers={"Authorization": f"Bearer {DEFAULT_KEY}"}, timeout=30.0, trust_env=False
        ) as http:
            while done < args.count and time.monotonic() < deadline:
                record = await asyncio.wait_for(consumer.getone(), timeout=max(deadline - time.monotonic(), 0.1))
                command = json.loads(record.value)
                batch_id = command["batch_id"]
                status = (await http.post(f"/batches/{batch_id}/cancel")).json()["status"]
                polls = 0
                while status not in TERMINAL and polls < MAX_POLLS:
                    await asyncio.sleep(args.interval)
                    status = (await http.get(f"/batches/{batch_id}")).json()["status"]
                    polls += 1
                event = {"command_id": command["command_id"], "batch_id": batch_id, "status": status, "final": True}
                await producer.send_and_wait(
                    args.events,
                    json.dumps(event).encode(),
                    key=record.key,
                    headers=_headers(command["command_id"], status),
                )
                await consumer.commit()
                done += 1
    finally:
        await producer.stop()
        await consumer.stop()
    print(f"naive: {done} commands", flush=True)


async def relay(args: argparse.Namespace) -> None:
    """Consume in batches, publish two events per command concurrently, commit: Kafka work only."""
    consumer, producer = _clients(args)
    await consumer.start()
    await producer.start()
    deadline = time.monotonic() + args.seconds
    done = 0
    try:
        while done < args.count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=500)
            futures = []
            for records in batch.values():
                for record in records:
                    command = json.loads(record.value)
                    cid = command["command_id"]
                    for status, outcome in (("cancelling", None), ("cancelled", "cancelled")):
                        event = {"command_id": cid, "batch_id": command["batch_id"], "status": status}
                        value = json.dumps(event).encode()
                        futures.append(
                            await producer.send(args.events, value, key=record.key, headers=_headers(cid, outcome))
                        )
                    done += 1
            if futures:
                await asyncio.gather(*futures)
                await consumer.commit()
    finally:
        await producer.stop()
        await consumer.stop()
    print(f"relay: {done} commands", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.baselines", description=__doc__)
    parser.add_argument("mode", choices=["naive", "relay"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--commands", required=True)
    parser.add_argument("--events", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--url", default="", help="naive: the provider base URL (…/openai/v1)")
    parser.add_argument("--interval", type=float, default=0.05, help="naive: sleep between polls")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=300.0)
    args = parser.parse_args()
    asyncio.run(naive(args) if args.mode == "naive" else relay(args))


if __name__ == "__main__":
    main()
