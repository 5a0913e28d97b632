"""Which HTTP transport should the provider clients use? Measure it: ``python -m bench.http_transport``.

Starts the emulator, then for each transport under the same ``httpx.AsyncClient`` API (httpx's default,
httpx-aiohttp's ``AiohttpTransport``, the worker's own ``LeanAiohttpTransport``), and raw aiohttp as the
ceiling, runs ``--requests`` GETs of one batch
at 1, 16 and 64 concurrent workers (each stopping after ``--seconds``) and prints requests per second.
Every response body is read and its status checked, as the worker does.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from batch_cancel_emulator.testing import DEFAULT_KEY, Emulator
from worker.providers.transport import LeanAiohttpTransport

Fetch = Callable[[], Awaitable[int]]
HEADERS = {"Authorization": f"Bearer {DEFAULT_KEY}"}


async def _drive(fetch: Fetch, concurrency: int, requests: int, seconds: float) -> float:
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while done < requests and time.perf_counter() < deadline:
            done += 1
            status = await fetch()
            if status != 200:
                raise RuntimeError(f"unexpected status {status}")

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - start)


async def _httpx(
    url: str, concurrency: int, args: argparse.Namespace, *, aiohttp_transport: bool, lean: bool = False
) -> float:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    transport: httpx.AsyncBaseTransport | None = None
    if lean:
        transport = LeanAiohttpTransport(limits)
    elif aiohttp_transport:
        transport = AiohttpTransport(limits=limits)
    async with httpx.AsyncClient(transport=transport, limits=limits, headers=HEADERS, trust_env=False) as client:

        async def fetch() -> int:
            response = await client.get(url)
            return response.status_code

        await _drive(fetch, concurrency, concurrency * 2, 5.0)  # warm the pool
        return await _drive(fetch, concurrency, args.requests, args.seconds)


async def _aiohttp(url: str, concurrency: int, args: argparse.Namespace) -> float:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=HEADERS) as session:

        async def fetch() -> int:
            async with session.get(url) as response:
                await response.read()
                return response.status

        await _drive(fetch, concurrency, concurrency * 2, 5.0)
        return await _drive(fetch, concurrency, args.requests, args.seconds)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.http_transport", description=__doc__)
    parser.add_argument("--requests", type=int, default=3000, help="per cell")
    parser.add_argument("--seconds", type=float, default=4.0, help="per cell")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    args = parser.parse_args()
    runners: dict[str, Callable[[str, int], Coroutine[Any, Any, float]]] = {
        "httpx default (httpcore)": lambda u, c: _httpx(u, c, args, aiohttp_transport=False),
        "httpx + AiohttpTransport": lambda u, c: _httpx(u, c, args, aiohttp_transport=True),
        "httpx + LeanAiohttpTransport": lambda u, c: _httpx(u, c, args, aiohttp_transport=True, lean=True),
        "raw aiohttp": lambda u, c: _aiohttp(u, c, args),
    }
    with Emulator() as emulator:
        batch_id = emulator.create_batch("openai")
        url = f"{emulator.base_url('openai')}/batches/{batch_id}"
        print(f"{'transport':<28}" + "".join(f"{f'c={c}':>10}" for c in args.concurrency) + "   (req/s)")
        for name, run in runners.items():
            cells = [asyncio.run(run(url, c)) for c in args.concurrency]
            print(f"{name:<28}" + "".join(f"{rate:>10.0f}" for rate in cells), flush=True)


if __name__ == "__main__":
    main()
