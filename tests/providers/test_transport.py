"""``LeanAiohttpTransport`` over real loopback HTTP: answers arrive whole and decoded, failures keep httpx's types.

``ProviderClient`` maps httpx's errors (a transport error is retried, an unsupported URL is rejected), so
what matters here is that every way a connection can fail still arrives as the httpx error it maps from.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from aiohttp import web

from devstack.broker import free_port
from worker.providers.http import ApiClient
from worker.providers.transport import LeanAiohttpTransport

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


def _client(base_url: str, *, read: float = 5.0) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=4, max_keepalive_connections=4)
    timeout = httpx.Timeout(connect=2.0, read=read, write=2.0, pool=2.0)
    return httpx.AsyncClient(
        base_url=base_url, transport=LeanAiohttpTransport(limits), timeout=timeout, limits=limits, trust_env=False
    )


async def test_answer_status_headers_and_body_arrive_whole(serve: Callable[[Handler], Awaitable[str]]) -> None:
    seen: list[tuple[str, str, str | None, bytes]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append((request.method, request.path_qs, request.headers.get("Authorization"), await request.read()))
        return web.json_response({"id": "batch_1", "status": "cancelling"}, status=202, headers={"x-mine": "1"})

    async with _client(await serve(handler)) as client:
        response = await client.post("/v1/batches/b%2F1/cancel?x=1", headers={"Authorization": "Bearer k"})
    assert response.status_code == 202 and response.reason_phrase == "Accepted"
    assert response.json() == {"id": "batch_1", "status": "cancelling"} and response.headers["x-mine"] == "1"
    assert seen == [("POST", "/v1/batches/b%2F1/cancel?x=1", "Bearer k", b"")]


async def test_a_gzip_answer_is_decoded_by_httpx(serve: Callable[[Handler], Awaitable[str]]) -> None:
    body = json.dumps({"status": "cancelled"}).encode()

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=gzip.compress(body), headers={"Content-Encoding": "gzip"})

    async with _client(await serve(handler)) as client:
        response = await client.get("/b")
    assert response.json() == {"status": "cancelled"}


async def test_connections_are_reused(serve: Callable[[Handler], Awaitable[str]]) -> None:
    peers: set[object] = set()

    async def handler(request: web.Request) -> web.Response:
        peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        return web.json_response({})

    async with _client(await serve(handler)) as client:
        for _ in range(5):
            assert (await client.get("/b")).status_code == 200
    assert len(peers) == 1


async def test_refused_connection_is_a_connect_error() -> None:
    async with _client(f"http://127.0.0.1:{free_port()}") as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("/b")


async def test_slow_answer_is_a_read_timeout(serve: Callable[[Handler], Awaitable[str]]) -> None:
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({})

    async with _client(await serve(handler), read=0.2) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get("/b")
    release.set()


async def test_body_cut_off_is_a_protocol_error(serve: Callable[[Handler], Awaitable[str]]) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "100"})
        await response.prepare(request)
        await response.write(b'{"status": ')
        assert request.transport is not None
        request.transport.close()
        return response

    async with _client(await serve(handler)) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get("/b")


async def test_a_cookie_one_answer_sets_never_rides_on_the_next_request(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    """One client serves every account of a provider: an edge's cookie must not cross from one to the next."""
    sent: list[str | None] = []

    async def handler(request: web.Request) -> web.Response:
        sent.append(request.headers.get("Cookie"))
        return web.json_response({}, headers={"Set-Cookie": "__edge=abc; Path=/"})

    base_url = await serve(handler)
    limits = httpx.Limits(max_connections=1)
    async with ApiClient(base_url=base_url, transport=LeanAiohttpTransport(limits), trust_env=False) as client:
        first = await client.get("/b", headers={"Authorization": "Bearer account-a"})
        await client.get("/b", headers={"Authorization": "Bearer account-b"})
    assert first.headers["set-cookie"].startswith("__edge=")
    assert sent == [None, None] and len(client.cookies) == 0
