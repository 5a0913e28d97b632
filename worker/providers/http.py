"""How the worker's HTTP clients are built: one pooled ``httpx.AsyncClient`` per provider.

The httpx API is kept (timeouts, headers, ``MockTransport`` in tests, OpenTelemetry's httpx instrumentation)
but the transport underneath is ``worker.providers.transport.LeanAiohttpTransport``, chosen by benchmark
(``python -m bench.http_transport``, docs/benchmarks.md). ``HTTPXClientInstrumentor.instrument_client`` wraps
whatever transport the client holds, so tracing still works.

Timeouts are explicit because the defaults (5 s for everything) are wrong both ways: a slow provider answer
should get ``read_timeout_s``, a dead host should fail within ``connect_timeout_s``. Redirects are not followed:
a batch API never redirects, and following one could carry the Authorization header somewhere unexpected.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

from worker.config import ProviderConfig
from worker.providers.transport import LeanAiohttpTransport
from worker.telemetry import exporting

__all__ = ["USER_AGENT", "TransportFactory", "build_http_client", "default_transport"]

USER_AGENT = "batch-cancel-worker/0.1"
#: Builds the transport for one provider's client; tests pass ``lambda: httpx.MockTransport(handler)``.
TransportFactory = Callable[[], httpx.AsyncBaseTransport]
_KEEPALIVE_S = 30.0


def _limits(config: ProviderConfig) -> httpx.Limits:
    """As many pooled connections as the per-account semaphores can ever use at once, all kept alive."""
    size = sum(config.max_concurrency for _ in config.accounts)
    return httpx.Limits(max_connections=size, max_keepalive_connections=size, keepalive_expiry=_KEEPALIVE_S)


def default_transport(config: ProviderConfig) -> httpx.AsyncBaseTransport:
    """The measured-fastest transport that still speaks httpx (see the module docstring)."""
    return LeanAiohttpTransport(_limits(config))


class _NoCookies(httpx.Cookies):
    """A jar that keeps nothing."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class ApiClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` without a cookie jar.

    Batch APIs authenticate by header. One client serves every account of a provider, so a cookie an API's
    edge sets on one account's answer would otherwise ride along on the next account's requests; and
    parsing each answer for cookies was 9 % of a provider call's CPU.
    """

    @property
    def cookies(self) -> httpx.Cookies:
        return _NO_COOKIES

    @cookies.setter
    def cookies(self, cookies: object) -> None:
        return None


_NO_COOKIES = _NoCookies()


def build_http_client(
    config: ProviderConfig,
    base_url: str,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    params: dict[str, str] | None = None,
) -> httpx.AsyncClient:
    timeout = httpx.Timeout(
        connect=config.connect_timeout_s,
        read=config.read_timeout_s,
        write=config.connect_timeout_s,
        pool=config.connect_timeout_s,
    )
    client = ApiClient(
        base_url=base_url,
        transport=transport if transport is not None else default_transport(config),
        timeout=timeout,
        limits=_limits(config),
        headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
        params=params or {},
        follow_redirects=False,
        trust_env=False,
    )
    # One CLIENT span per HTTP attempt, children of the logical call's span (see ProviderClient._call) — only
    # when spans are exported: the instrumentation was the largest single cost per command (docs/benchmarks.md,
    # "Changes made from the profile", item 1), too much to pay for spans nobody would see.
    if exporting():
        HTTPXClientInstrumentor.instrument_client(client)
    return client
