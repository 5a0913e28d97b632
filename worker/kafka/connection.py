"""The connection settings every Kafka client of the worker shares (one place for bootstrap, id, security).

Consumer, producer, the Python client and the ``batch-cancel`` CLI all build their aiokafka clients from
``client_kwargs``, so TLS and SASL are configured once and cannot drift apart between them.

Two kinds of failure are told apart on purpose, because they need different people at 3 a.m.:

* ``ConfigError`` (exit 2): the settings contradict each other (``Settings`` refuses them) or name a file
  that is not there (``security_kwargs``). Found before any network traffic.
* ``KafkaStartError`` (exit 3): the settings are coherent but the broker refused them (wrong password,
  untrusted certificate, wrong port). Found by ``check_connection``, which opens one connection itself
  so that the real cause (``SSLCertVerificationError``, the broker's SASL message) is known; aiokafka's
  own bootstrap only logs it and then raises a generic "Unable to bootstrap".

No message built here contains the SASL password: aiokafka's exceptions never carry it, and ours only
name the user, the mechanism and the broker address.

Every consumer the worker and its tools open (commands, follows reader, ``EventFollower``, the bench's
observer) is stopped through ``stop_client``: aiokafka's consumer can leak a ``CancelledError`` of its own
from ``stop()`` (aio-libs/aiokafka#647: its fetcher awaits a fetch task it has just cancelled, which raises
when that task was waiting out a failed fetch), and a task that never asked to be cancelled would end as
if it had been: a restore of follows would stop half-way and leave its partitions paused.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path
from typing import Any, Protocol

from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context

from worker.config import ConfigError, KafkaConnection, kafka_tls_files

__all__ = ["KafkaStartError", "check_connection", "client_kwargs", "security_kwargs", "stop_client"]

log = logging.getLogger("worker.kafka")


class _Stoppable(Protocol):
    async def stop(self) -> None: ...


async def stop_client(client: _Stoppable, what: str) -> None:
    """``client.stop()``, swallowing the ``CancelledError`` aiokafka itself may leak (see above), but only
    when nobody is cancelling the current task: a real cancellation always goes through."""
    try:
        await client.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        log.warning("the %s stopped uncleanly (a fetch was failing when it stopped; aiokafka#647)", what)
        await _finish_stop(client)


async def _finish_stop(client: object) -> None:
    """What aiokafka's ``AIOKafkaConsumer.stop`` skipped after the leak (its fetcher's other tasks, its
    connections and metadata task), which a second ``stop()`` would not do: it is already marked closed.
    Reaches into aiokafka's internals, so each step is optional and best effort; a worker that opens a
    follows reader at every assignment must not leak a client each time this happens."""
    fetcher = getattr(client, "_fetcher", None)
    for pending in list(getattr(fetcher, "_pending_tasks", ())):
        pending.cancel()
    inner = getattr(client, "_client", None)
    close = getattr(inner, "close", None)
    if close is None:
        return
    try:
        await close()
    except Exception as exc:  # noqa: BLE001 - best effort, after a failure already logged
        log.warning("closing the connections after that failed too: %s", exc)


class KafkaStartError(Exception):
    """The broker cannot be used with these settings; the message is one line, free of secrets."""


def client_kwargs(settings: KafkaConnection) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client (producer, consumer, admin); raises ``ConfigError``."""
    return {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "client_id": settings.client_id,
        **security_kwargs(settings),
    }


def security_kwargs(settings: KafkaConnection) -> dict[str, Any]:
    """aiokafka's security arguments, with the SASL password and TLS files read now; raises ``ConfigError``.

    That the combination makes sense is checked where the settings are defined (``KafkaConnection``); what is left
    here is what needs the file system.
    """
    protocol = settings.kafka_security_protocol
    kwargs: dict[str, Any] = {"security_protocol": protocol}
    if protocol.startswith("SASL_"):
        kwargs.update(_sasl(settings))
    if protocol.endswith("SSL"):
        kwargs["ssl_context"] = _ssl_context(settings)
    return kwargs


def _sasl(settings: KafkaConnection) -> dict[str, Any]:
    if settings.kafka_sasl_password is not None:
        password = settings.kafka_sasl_password.get_secret_value()
    else:
        path = settings.kafka_sasl_password_file
        assert path is not None  # KafkaConnection requires exactly one of the two
        try:
            # Only the line end a Secret mount or `echo` adds is dropped; inner whitespace is the password's.
            password = path.read_text().rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"cannot read BCW_KAFKA_SASL_PASSWORD_FILE {path}: {exc.strerror}") from None
        if not password:
            raise ConfigError(f"BCW_KAFKA_SASL_PASSWORD_FILE {path} is empty")
    return {
        "sasl_mechanism": settings.kafka_sasl_mechanism,
        "sasl_plain_username": settings.kafka_sasl_username,
        "sasl_plain_password": password,
    }


def _ssl_context(settings: KafkaConnection) -> ssl.SSLContext:
    """aiokafka's context: certificate and host name always verified (``check_hostname`` cannot be off)."""
    for name, path in kafka_tls_files(settings):
        if path is not None:
            _readable(name, path)
    try:
        context: ssl.SSLContext = create_ssl_context(
            cafile=settings.kafka_ssl_cafile,
            certfile=settings.kafka_ssl_certfile,
            keyfile=settings.kafka_ssl_keyfile,
        )
    except ssl.SSLError as exc:
        raise ConfigError(
            f"TLS files unusable (BCW_KAFKA_SSL_CAFILE / _CERTFILE / _KEYFILE must be PEM): {exc.reason or exc}"
        ) from None
    return context


def _readable(name: str, path: Path) -> None:
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot read {name} {path}: {exc.strerror}") from None


async def check_connection(settings: KafkaConnection, timeout: float = 15.0) -> None:
    """Connect and authenticate to one bootstrap broker, or raise ``KafkaStartError`` saying why not.

    Tried once per address, in order; the first success is enough (the clients then discover the rest).
    Called at start so that a wrong password or an untrusted certificate ends the process at once with
    one line, instead of aiokafka's error log per attempt followed by a traceback.
    """
    kwargs = security_kwargs(settings)
    errors: list[str] = []
    for server in settings.kafka_bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        host = host.strip("[]")
        try:
            conn = await asyncio.wait_for(
                create_conn(
                    host,
                    int(port),
                    client_id=settings.client_id,
                    request_timeout_ms=int(timeout * 1000),
                    **kwargs,
                ),
                timeout,
            )
        except Exception as exc:  # noqa: BLE001 - every cause is translated into one line below
            errors.append(_explain(server.strip(), exc, settings))
            continue
        conn.close()
        return
    more = f" (and {len(errors) - 1} more: {'; '.join(errors[1:])})" if len(errors) > 1 else ""
    raise KafkaStartError(f"{errors[0]}{more}")


def _explain(server: str, exc: BaseException, settings: KafkaConnection) -> str:  # noqa: PLR0911 - one per cause
    """The cause of a failed connection in operator's words, with the setting that most likely fixes it."""
    who = f"{settings.kafka_sasl_username!r} ({settings.kafka_sasl_mechanism})"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"TLS: the certificate of Kafka broker {server} is not trusted ({exc.verify_message}); "
            "check BCW_KAFKA_SSL_CAFILE names the CA that signed it and that the broker address matches it"
        )
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake with Kafka broker {server} failed ({exc.reason}); is it a TLS listener?"
    # Only string arguments are quoted: some aiokafka errors carry the connection object instead.
    detail = exc.args[0] if exc.args and isinstance(exc.args[0], str) and exc.args[0] else None
    if isinstance(exc, SaslAuthenticationFailed | AuthenticationFailedError):
        return f"Kafka broker {server} refused authentication as {who}: {detail or 'no reason given'}"
    if isinstance(exc, UnsupportedSaslMechanismError):
        return f"Kafka broker {server} does not offer {settings.kafka_sasl_mechanism}: {detail or 'no detail'}"
    if isinstance(exc, TimeoutError):
        return (
            f"no answer from Kafka broker {server} in time (a TLS/SASL setting that does not match the "
            f"listener, BCW_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol}, looks like this)"
        )
    if isinstance(exc, ConnectionRefusedError):
        return f"cannot reach Kafka broker {server}: connection refused"
    if isinstance(exc, OSError):
        return f"cannot reach Kafka broker {server}: {exc.strerror or exc}"
    if isinstance(exc, KafkaError):
        return (
            f"Kafka broker {server} closed the connection ({type(exc).__name__}); does "
            f"BCW_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol} match its listener?"
        )
    return f"cannot connect to Kafka broker {server}: {type(exc).__name__}"
