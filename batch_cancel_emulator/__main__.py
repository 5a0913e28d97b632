"""``python -m batch_cancel_emulator --host 127.0.0.1 --port 0 [--api-key dialect=KEY ...] [--tls-cert C --tls-key K]
[--push-concurrency N]``.

Binds the socket itself so ``--port 0`` works: the first stdout line is ``emulator listening on http://H:P``,
which the test helper reads to learn the port (no free-port race between choosing and binding). With
``--tls-cert``/``--tls-key`` the same app is served over TLS too, on a second port (the second line,
``emulator listening on https://H:P``): Microsoft Entra ID's endpoints must be https for azure-identity.
``--push-concurrency``: how many webhook deliveries may be in flight at once (``push.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import socket
import sys

import uvicorn

from batch_cancel_emulator.app import App, DroppedConnection
from batch_cancel_emulator.push import DEFAULT_CONCURRENCY
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
    parser.add_argument("--tls-cert", help="PEM certificate: also serve https on a second port")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert")
    parser.add_argument(
        "--push-concurrency", type=int, default=DEFAULT_CONCURRENCY, help="webhook deliveries in flight at most"
    )
    args = parser.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        raise SystemExit("--tls-cert and --tls-key go together")
    if not 1 <= args.push_concurrency <= 10_000:
        raise SystemExit("--push-concurrency must be 1..10000")

    sock, (host, port) = _listen(args.host, args.port)
    logging.getLogger("uvicorn.error").addFilter(_QuietDrops())
    app = App(_keys(args.api_key), push_concurrency=args.push_concurrency)
    server = uvicorn.Server(_config(app, args.log_level))
    print(f"emulator listening on http://{host}:{port}", flush=True)
    if args.tls_cert is None:
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C in `make dev` reaches the whole group: stop quietly
            server.run(sockets=[sock])
        sys.exit(0)
    tls_sock, (_, tls_port) = _listen(args.host, 0)
    tls = uvicorn.Server(_config(app, args.log_level, ssl_certfile=args.tls_cert, ssl_keyfile=args.tls_key))
    print(f"emulator listening on https://{host}:{tls_port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_both((server, sock), (tls, tls_sock)))
    sys.exit(0)


def _listen(host: str, port: int) -> tuple[socket.socket, tuple[str, int]]:
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on sockets whose proto says TCP, and without it
    # uvicorn's separate header and body writes meet Nagle + delayed ACK (40 ms per request).
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(4096)
    bound = sock.getsockname()
    return sock, (str(bound[0]), int(bound[1]))


def _config(
    app: App, log_level: str, ssl_certfile: str | None = None, ssl_keyfile: str | None = None
) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        http="httptools",
        loop="asyncio",
        lifespan="off",
        access_log=False,
        log_level=log_level,
        backlog=4096,
        timeout_keep_alive=30,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
    )


async def _serve_both(*servers: tuple[uvicorn.Server, socket.socket]) -> None:
    """Both listeners share one app (one state); when either stops (a signal reaches one), both stop."""
    tasks = [asyncio.create_task(server.serve(sockets=[sock])) for server, sock in servers]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for server, _ in servers:
        server.should_exit = True
    await asyncio.gather(*tasks)


if __name__ == "__main__":
    main()
