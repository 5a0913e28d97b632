"""``python -m batch_cancel_emulator --host 127.0.0.1 --port 0 [--api-key dialect=KEY ...]``.

Binds the socket itself so ``--port 0`` works: the first stdout line is ``emulator listening on http://H:P``,
which the test helper reads to learn the port (no free-port race between choosing and binding).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import socket
import sys

import uvicorn

from batch_cancel_emulator.app import App, DroppedConnection
from batch_cancel_emulator.shapes import PREFIXES


class _QuietDrops(logging.Filter):
    """A deliberate mid-body drop is a scenario, not a crash: keep it out of the error log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], DroppedConnection))


def _keys(values: list[str]) -> dict[str, set[str]]:
    keys: dict[str, set[str]] = {}
    for value in values:
        dialect, sep, key = value.partition("=")
        if not sep or dialect not in PREFIXES.values() or not key:
            raise SystemExit(f"--api-key expects dialect=KEY with dialect in {sorted(PREFIXES.values())}")
        keys.setdefault(dialect, set()).add(key)
    return keys


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m batch_cancel_emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", action="append", default=[], help="dialect=KEY, repeatable")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)

    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on sockets whose proto says TCP, and without it
    # uvicorn's separate header and body writes meet Nagle + delayed ACK (40 ms per request).
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(4096)
    host, port = sock.getsockname()[:2]

    logging.getLogger("uvicorn.error").addFilter(_QuietDrops())
    config = uvicorn.Config(
        App(_keys(args.api_key)),
        http="httptools",
        loop="asyncio",
        lifespan="off",
        access_log=False,
        log_level=args.log_level,
        backlog=4096,
        timeout_keep_alive=30,
    )
    server = uvicorn.Server(config)
    print(f"emulator listening on http://{host}:{port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C in `make dev` reaches the whole group: stop quietly
        server.run(sockets=[sock])
    sys.exit(0)


if __name__ == "__main__":
    main()
