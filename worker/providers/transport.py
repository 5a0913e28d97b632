"""The transport under every provider's ``httpx.AsyncClient``: httpx requests sent on one pooled aiohttp session.

httpx stays the client (its API, timeouts, ``MockTransport`` in tests, OpenTelemetry's httpx instrumentation,
which wraps whatever transport a client holds); this decides only how bytes reach the provider. httpx 0.28's
own transport (httpcore) slows down as concurrency grows (encode/httpx#3215), and httpx-aiohttp's
``AiohttpTransport`` streams every body through an async generator and two wrapper streams. Provider answers
are small JSON objects, so this one reads the body whole inside aiohttp's context and hands httpx a finished
``Response``: the connection goes back to the pool before httpx sees the answer, and nothing is left to
close. ``python -m bench`` compares it with httpx-aiohttp and raw aiohttp (docs/benchmarks.md).

Errors keep httpx's types, which ``ProviderClient`` maps: a refused or reset connection is
``ConnectError``/``ReadError``, a timeout ``ConnectTimeout``/``ReadTimeout``/``PoolTimeout``, a cut-off body
``RemoteProtocolError``, and a URL aiohttp will not send ``UnsupportedProtocol``.
"""

from __future__ import annotations

import ssl

import aiohttp
import httpx
import yarl

__all__ = ["LeanAiohttpTransport"]

_HTTP_11 = {"http_version": b"HTTP/1.1"}


#: aiohttp's errors and the httpx error a caller of httpx expects instead, most specific first.
_MAPPED: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], type[httpx.TransportError]], ...] = (
    ((aiohttp.InvalidUrlClientError, aiohttp.NonHttpUrlClientError), httpx.UnsupportedProtocol),
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.SocketTimeoutError, httpx.ReadTimeout),
    (TimeoutError, httpx.PoolTimeout),  # the pool wait (ClientTimeout.connect) or any other deadline
    (aiohttp.ClientConnectorError, httpx.ConnectError),
    ((aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError), httpx.RemoteProtocolError),
)


def _mapped(exc: BaseException) -> httpx.TransportError:
    """The httpx error for what aiohttp raised, with aiohttp's message; reset, broken pipe and the rest: ReadError."""
    message = str(exc) or type(exc).__name__
    kind = next((to for what, to in _MAPPED if isinstance(exc, what)), httpx.ReadError)
    return kind(message)


class LeanAiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp session (created on first use, in the running loop) with ``limits``' pool size."""

    def __init__(self, limits: httpx.Limits, ssl_context: ssl.SSLContext | None = None) -> None:
        self._limit = limits.max_connections or 100
        self._keepalive = limits.keepalive_expiry
        self._ssl = ssl_context if ssl_context is not None else httpx.create_ssl_context()
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[float | None, float | None, float | None], aiohttp.ClientTimeout] = {}

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=self._limit, keepalive_timeout=self._keepalive, ssl=self._ssl)
        # No cookie jar and no decompression: httpx keeps (none) and decodes (gzip, deflate) for itself.
        self._session = aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False
        )
        return self._session

    def _timeout(self, request: httpx.Request) -> aiohttp.ClientTimeout:
        given = request.extensions.get("timeout") or {}
        key = (given.get("connect"), given.get("read"), given.get("pool"))
        timeout = self._timeouts.get(key)
        if timeout is None:
            # sock_connect: the TCP/TLS handshake; sock_read: between bytes of the answer; connect: pool + handshake.
            connect = None if key[0] is None or key[2] is None else key[0] + key[2]
            timeout = aiohttp.ClientTimeout(sock_connect=key[0], sock_read=key[1], connect=connect)
            self._timeouts[key] = timeout
        return timeout

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session or self._open()
        body = request.content or None  # provider calls carry no body or a small JSON one, never a stream
        try:
            async with session.request(
                request.method,
                # As httpx encoded it: yarl would otherwise re-normalise the query (``%3A`` → ``:``), and the bytes
                # on the wire would differ from what a SigV4 signature covers (Bedrock's list time filters).
                yarl.URL(str(request.url), encoded=True),
                headers=request.headers.multi_items(),
                data=body,
                allow_redirects=False,
                timeout=self._timeout(request),
            ) as answer:
                content = await answer.read()
                status, headers, reason = answer.status, answer.raw_headers, answer.reason
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise _mapped(exc) from exc
        extensions = {**_HTTP_11, "reason_phrase": reason.encode()} if reason else _HTTP_11
        return httpx.Response(status, headers=headers, content=content, request=request, extensions=extensions)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
