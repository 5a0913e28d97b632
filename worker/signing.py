"""Optional signed commands: an account can require that every cancel for it carries an HMAC of its bytes.

Why, when ACLs exist: a Kafka ACL says *who may write to the commands topic*; it cannot say *who may
cancel batches of account X*. Teams often share one commands topic (and sometimes one principal), so an
operator can give an account publishing keys (``signing_keys_env`` / ``signing_keys_file`` in the
providers file) and only holders of a key can cancel that account's batches.

The scheme, chosen so any language can implement it with its standard library:

* **signed bytes**: the Kafka record value exactly as published (JSON or CloudEvent), nothing else.
  No canonical JSON, so no two implementations can disagree about it; the value names provider,
  account, batch and ``requested_at``, so all that matters is covered. The record key is not signed.
* **header**: ``bcw-signature: v1=<lowercase hex HMAC-SHA256(key, value)>``. The key is the UTF-8
  bytes of the secret string as stored (recommended: 64 hex characters from a CSPRNG).
* **rotation**: an account may list several keys; a signature made with any of them is accepted.
* **replay**: a signed command must carry ``requested_at`` within ``max_age`` of the worker's clock, and
  a ``command_id`` seen before at a *different* position (topic, partition, offset) in this process is
  refused. The same position seen again is a redelivery (rebalance, restart) and is processed as usual.

A refused command is dead-lettered with reason ``unauthorized``. Unsigned and badly signed commands
also get the usual final ``invalid`` event; a replay does not, because the original command with the
same ``command_id`` has (or will have) its own final event, and one command has exactly one.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence

from worker.contract import CancelCommand, Command, DeadLetterReason, InvalidCommand
from worker.record import Record

__all__ = ["HEADER", "SIGNATURE_VERSION", "SignatureVerifier", "sign", "signature"]

HEADER = "bcw-signature"
SIGNATURE_VERSION = "v1"
#: How many signed ``command_id`` values one process remembers for replay detection.
SEEN_LIMIT = 100_000


def signature(value: bytes, key: bytes) -> str:
    """``v1=<hex>``: the header value for ``value`` signed with ``key``."""
    return f"{SIGNATURE_VERSION}={hmac.new(key, value, hashlib.sha256).hexdigest()}"


def sign(value: bytes, key: bytes) -> tuple[str, bytes]:
    """The Kafka header to add to a record whose value is ``value``: ``(name, value)`` as aiokafka takes it."""
    return HEADER, signature(value, key).encode("ascii")


class SignatureVerifier:
    """Checks commands of the accounts that require signatures; others pass untouched."""

    def __init__(
        self,
        keys: Mapping[tuple[str, str], Sequence[bytes]],
        *,
        max_age_s: float,
        now: Callable[[], float] = time.time,
        seen_limit: int = SEEN_LIMIT,
    ) -> None:
        self._keys = {account: tuple(k) for account, k in keys.items() if k}
        self._max_age = max_age_s
        self._now = now
        self._seen: OrderedDict[str, tuple[str, int, int]] = OrderedDict()
        self._seen_limit = seen_limit

    @property
    def accounts(self) -> frozenset[tuple[str, str]]:
        """``(provider, account)`` pairs that require signed commands."""
        return frozenset(self._keys)

    def verify(self, record: Record, command: Command) -> None:
        """Raise ``InvalidCommand(UNAUTHORIZED)`` unless the command may be acted on."""
        keys = self._keys.get((command.provider, command.account))
        if keys is None:
            return
        where = f"{command.provider}/{command.account}"
        partial = {"provider": command.provider, "account": command.account}
        if isinstance(command, CancelCommand):
            partial["batch_id"] = command.batch_id

        def refuse(message: str, *, answer: bool = True) -> InvalidCommand:
            return InvalidCommand(
                DeadLetterReason.UNAUTHORIZED,
                message,
                command_id=command.command_id if answer else None,
                partial=partial,
            )

        offered = [v for k, v in record.headers or () if k == HEADER and v is not None]  # Kafka allows null values
        if not offered:
            raise refuse(f"account {where} requires signed commands: no {HEADER} header")
        value = record.value or b""
        expected = [signature(value, key).encode("ascii") for key in keys]
        # Every offered value is compared with every key, without early exit on the first mismatch of bytes.
        if not any(hmac.compare_digest(o.strip(), e) for o in offered for e in expected):
            raise refuse(f"account {where}: {HEADER} does not match any of its keys")
        if command.requested_at is None:
            raise refuse(f"account {where}: signed commands must carry requested_at")
        age = self._now() - command.requested_at.timestamp()
        if abs(age) > self._max_age:
            raise refuse(
                f"account {where}: requested_at is {age:.0f}s from now; signed commands are accepted "
                f"within {self._max_age:.0f}s"
            )
        here = (record.topic, record.partition, record.offset)
        first = self._seen.get(command.command_id)
        if first is not None and first != here:
            raise refuse(
                f"account {where}: command_id already seen at {first[0]}/{first[1]}@{first[2]} (replay)",
                answer=False,
            )
        self._seen[command.command_id] = here
        self._seen.move_to_end(command.command_id)
        while len(self._seen) > self._seen_limit:
            self._seen.popitem(last=False)
