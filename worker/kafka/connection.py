"""The connection settings every Kafka client of the worker shares (one place for bootstrap, id, security)."""

from __future__ import annotations

from typing import Any

from worker.config import Settings

__all__ = ["client_kwargs"]


def client_kwargs(settings: Settings) -> dict[str, Any]:
    return {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "client_id": settings.client_id,
    }
