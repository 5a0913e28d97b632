"""What can go wrong when the worker talks to a provider, in three kinds the follow logic can act on.

Every httpx exception and every provider error body is translated into one of these where it enters
(``worker.providers``), so nothing above the provider seam ever sees httpx, aiohttp or a raw status code::

    ProviderError                 base of everything below
    ├── Rejected                  permanent: 400/401/403/404/422, insufficient_quota, an invalid id…
    │                             retrying cannot help; the outcome is "rejected" with status and message
    ├── GaveUp                    retryable errors kept coming until the retry budget ran out
    ├── Retryable                 (internal) one attempt failed in a way another attempt may not:
    │                             overload, 429, 5xx, a refused/reset/cut-off connection, a timeout
    └── AlreadyTerminal           (internal) a cancel was refused because the batch had already finished;
                                  the client reads the batch once and reports that terminal state

``Retryable`` and ``AlreadyTerminal`` never leave ``ProviderClient``: the retry loop turns the first into
``GaveUp`` and the cancel path turns the second into a normal result.
"""

from __future__ import annotations

__all__ = ["AlreadyTerminal", "GaveUp", "ProviderError", "Rejected", "Retryable"]


class ProviderError(Exception):
    """Base class: the provider call did not produce a batch snapshot."""


class Rejected(ProviderError):
    """The provider refused the request for a reason another attempt cannot fix."""

    def __init__(self, http_status: int | None, code: str | None, message: str) -> None:
        super().__init__(
            f"rejected ({http_status if http_status is not None else 'no status'}"
            f"{', ' + code if code else ''}): {message}"
        )
        self.http_status = http_status
        self.code = code
        self.message = message


class GaveUp(ProviderError):
    """Every attempt failed with a retryable error until the time budget (or the attempt cap) ran out."""

    def __init__(self, cause: str, attempts: int) -> None:
        super().__init__(f"gave up after {attempts} attempt(s): {cause}")
        self.cause = cause
        self.attempts = attempts


class Retryable(ProviderError):
    """One attempt failed transiently; ``retry_after`` is the server's own hint in seconds, if it gave one."""

    def __init__(self, cause: str, *, http_status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(cause)
        self.cause = cause
        self.http_status = http_status
        self.retry_after = retry_after


class AlreadyTerminal(ProviderError):
    """A cancel was refused because the batch is finished (OpenAI 409, others 400)."""

    def __init__(self, http_status: int, message: str) -> None:
        super().__init__(f"already terminal ({http_status}): {message}")
        self.http_status = http_status
        self.message = message
