"""A small typed client for Toxiproxy's HTTP API (the server: ``devstack.toxiproxy``).

Only what the network scenarios use: create a proxy, cut and heal it (``enabled``), add and remove toxics,
and ``reset`` (every proxy enabled, every toxic gone) between scenarios. Errors raise with the server's
answer, because a toxic that silently failed to apply would make a scenario pass for the wrong reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import httpx

__all__ = ["Proxy", "Toxiproxy"]

Stream = Literal["upstream", "downstream"]
ToxicType = Literal["latency", "bandwidth", "slow_close", "timeout", "reset_peer", "slicer", "limit_data"]


@dataclass(frozen=True)
class Proxy:
    """One proxy: clients connect to ``listen_port``, the proxy connects to ``upstream``."""

    name: str
    listen_port: int
    upstream: str

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.listen_port}"


class Toxiproxy:
    def __init__(self, url: str) -> None:
        self._http = httpx.Client(base_url=url, timeout=10.0, trust_env=False)

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self._http.request(method, path, json=body)
        if response.status_code >= 300:
            raise RuntimeError(f"toxiproxy {method} {path}: {response.status_code} {response.text}")
        return response.json() if response.content else None

    def create(self, name: str, listen_port: int, upstream: str) -> Proxy:
        self._call("POST", "/proxies", {"name": name, "listen": f"127.0.0.1:{listen_port}", "upstream": upstream})
        return Proxy(name, listen_port, upstream)

    def set_enabled(self, proxy: Proxy | str, enabled: bool) -> None:
        """``False`` cuts the link: open connections are closed and new ones refused until enabled again."""
        self._call("POST", f"/proxies/{_name(proxy)}", {"enabled": enabled})

    def add_toxic(
        self,
        proxy: Proxy | str,
        kind: ToxicType,
        *,
        stream: Stream = "downstream",
        toxicity: float = 1.0,
        name: str | None = None,
        **attributes: int | float,
    ) -> str:
        """Add a toxic (attributes as in Toxiproxy's README, e.g. ``latency=300, jitter=100``); returns its name."""
        toxic = name or f"{kind}_{stream}"
        body = {"name": toxic, "type": kind, "stream": stream, "toxicity": toxicity, "attributes": attributes}
        self._call("POST", f"/proxies/{_name(proxy)}/toxics", body)
        return toxic

    def remove_toxic(self, proxy: Proxy | str, toxic: str) -> None:
        self._call("DELETE", f"/proxies/{_name(proxy)}/toxics/{toxic}")

    def toxics(self, proxy: Proxy | str) -> list[dict[str, Any]]:
        return list(self._call("GET", f"/proxies/{_name(proxy)}/toxics"))

    def reset(self) -> None:
        """Every proxy enabled again, every toxic removed."""
        self._call("POST", "/reset")


def _name(proxy: Proxy | str) -> str:
    return proxy.name if isinstance(proxy, Proxy) else proxy
