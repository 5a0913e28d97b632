"""The local stack behind ``make dev``: broker first, then (once they exist) emulator and worker."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from devstack.broker import KafkaBroker

DEV_TOPICS = {"batch-cancel.commands": 6, "batch-cancel.events": 6, "batch-cancel.dlq": 1}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    parser.add_argument("--kafka-port", type=int, default=9092, help="broker port on 127.0.0.1 (default 9092)")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    broker = KafkaBroker(port=args.kafka_port)
    print(f"[stack] starting Kafka broker on {broker.bootstrap_servers} (data in {broker.data_dir})", flush=True)
    try:
        broker.start()
        for topic, partitions in DEV_TOPICS.items():
            broker.create_topic(topic, partitions)
        print(f"[stack] Kafka {broker.version()} ready; topics: {', '.join(DEV_TOPICS)}", flush=True)
        print("[stack] Ctrl-C stops everything", flush=True)
        stop.wait()
    finally:
        print("[stack] stopping", flush=True)
        broker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
