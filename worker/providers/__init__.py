"""Provider dialects behind one interface: ``ProviderClient.cancel`` / ``retrieve`` / ``list_page``, ``build_clients``.

A dialect (``openai``, ``siliconflow``, ``dashscope``, ``deepinfra``, ``anthropic``, ``mistral``, ``azure``,
``together``, ``xai``, ``gemini``, ``vertex``, ``bedrock``) knows its default base URL, paths, auth headers, how to
parse its batch object and how to classify its errors; ``worker.providers.access`` turns each account's key or
cloud credentials into what every request carries. An OpenAI-compatible provider (Groq, a gateway) needs no
code: configure ``dialect: openai`` with its ``base_url``.
"""

from __future__ import annotations

import dataclasses

from worker.config import ProviderConfig, ProvidersFile
from worker.providers.access import account_access
from worker.providers.anthropic import AnthropicDialect
from worker.providers.azure import AzureDialect
from worker.providers.base import Dialect
from worker.providers.bedrock import BedrockDialect
from worker.providers.client import CancelResult, ProviderClient
from worker.providers.dashscope import DashScopeDialect
from worker.providers.deepinfra import DeepInfraDialect
from worker.providers.gemini import GeminiDialect
from worker.providers.http import TransportFactory, build_http_client
from worker.providers.listing import (
    CRITERIA,
    Criterion,
    ListedBatch,
    ListFilter,
    ListPage,
    Support,
    UnsupportedCriterion,
)
from worker.providers.mistral import MistralDialect
from worker.providers.openai import OpenAIDialect
from worker.providers.siliconflow import SiliconFlowDialect
from worker.providers.together import TogetherDialect
from worker.providers.vertex import VertexDialect
from worker.providers.xai import XAIDialect
from worker.retry import RetryPolicy

__all__ = [
    "CRITERIA",
    "DIALECTS",
    "CancelResult",
    "Criterion",
    "ListFilter",
    "ListPage",
    "ListedBatch",
    "ProviderClient",
    "Support",
    "UnsupportedCriterion",
    "build_clients",
    "dialect_for",
]

DIALECTS: dict[str, Dialect] = {
    d.name: d
    for d in (
        OpenAIDialect(),
        SiliconFlowDialect(),
        DashScopeDialect(),
        DeepInfraDialect(),
        AnthropicDialect(),
        MistralDialect(),
        AzureDialect(),
        TogetherDialect(),
        XAIDialect(),
        GeminiDialect(),
        VertexDialect(),
        BedrockDialect(),
    )
}


def dialect_for(name: str) -> Dialect:
    return DIALECTS[name]


def base_url_for(name: str, config: ProviderConfig) -> str:
    """The configured override (``ProviderConfig`` refuses one that could carry a secret) or the dialect default."""
    if config.base_url is None:
        return dialect_for(config.dialect).default_base_url
    return str(config.base_url).rstrip("/")


def build_clients(
    providers: ProvidersFile,
    *,
    transport_factory: TransportFactory | None = None,
    policy: RetryPolicy | None = None,
) -> dict[str, ProviderClient]:
    """One client per configured provider; every account's key or credentials are read now, so a missing secret
    (or a missing ``[google]``/``[aws]`` extra) fails at start.

    ``policy`` overrides the retry defaults (tests); each provider's ``retry_budget_s`` always applies.
    """
    base_policy = policy or RetryPolicy()
    clients: dict[str, ProviderClient] = {}
    for name, config in providers.providers.items():
        base_url = base_url_for(name, config)
        dialect = dialect_for(config.dialect)
        override = base_url if config.base_url is not None else None
        access = {
            account: account_access((name, account), config, acc, dialect, override)
            for account, acc in config.accounts.items()
        }
        transport = transport_factory() if transport_factory is not None else None
        clients[name] = ProviderClient(
            name,
            dialect,
            build_http_client(config, base_url, transport=transport, params=_query_for(config)),
            access,
            max_concurrency=config.max_concurrency,
            max_requests_per_s=config.max_requests_per_s,
            policy=dataclasses.replace(base_policy, budget_s=config.retry_budget_s),
        )
    return clients


def _query_for(config: ProviderConfig) -> dict[str, str]:
    """Query parameters every call carries: only Azure's classic ``api-version`` (never a secret)."""
    return {"api-version": config.api_version} if config.api_version is not None else {}
