"""``ProviderClient.list_page`` against the emulator over real HTTP, in every dialect.

Each test creates batches with metadata, models, names, creation times and statuses, walks the list page by page
with a selector, and checks two things: exactly the matching batches come back, and the emulator's request log
shows the pages and the server-side filters the dialect is meant to send (so a filter quietly dropped, or a
pager that stops a page early, fails here).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from batch_cancel_emulator.testing import DEFAULT_AWS_KEY, DEFAULT_KEY, Emulator
from tests.support.cloud import make_service_account_key
from worker.config import ProvidersFile
from worker.contract import BatchStatus
from worker.errors import Rejected
from worker.providers import ListFilter, ProviderClient, UnsupportedCriterion, build_clients
from worker.retry import RetryPolicy

FAST = RetryPolicy(wait_min_s=0.01, wait_first_s=0.05, wait_max_s=0.2, budget_s=10.0)
RUNNING = frozenset({BatchStatus.VALIDATING, BatchStatus.QUEUED, BatchStatus.IN_PROGRESS})
BASE = int(time.time()) - 10_000
COUNT = 24
PAGE = 4


@dataclass(frozen=True)
class Spec:
    """One batch the test creates, and what it carries."""

    i: int
    team: str
    running: bool
    name: str
    model: str
    created_at: int


SPECS = [
    Spec(
        i,
        team="a" if i % 2 == 0 else "b",
        running=i % 3 != 0,
        name=f"kill-{i}" if i % 4 != 1 else f"keep-{i}",
        model="model-x" if i % 5 else "model-y",
        created_at=BASE + i * 10,
    )
    for i in range(COUNT)
]


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator() as emu:
        yield emu


MakeClient = Callable[..., ProviderClient]


@pytest.fixture
async def make_client(emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[MakeClient]:
    made: list[ProviderClient] = []
    emulator.reset()

    def make(dialect: str, **overrides: Any) -> ProviderClient:
        config: dict[str, Any] = {
            "dialect": dialect,
            "base_url": emulator.base_url(dialect),
            "max_requests_per_s": 1e5,
            **overrides,
        }
        if dialect == "vertex":
            key = make_service_account_key(tmp_path, emulator.google_token_uri)
            emulator.trust_google_key(key.key_id, key.client_email, key.public_pem)
            account: dict[str, Any] = {
                "project": "bcw-test-project",
                "location": "europe-west4",
                "google_service_account_file": str(key.path),
            }
        elif dialect == "bedrock":
            access_key, secret = DEFAULT_AWS_KEY
            monkeypatch.setenv("AWS_ACCESS_KEY_ID", access_key)
            monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
            monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
            monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
            account = {"region": "eu-west-1"}
        else:
            key_file = tmp_path / f"key-{dialect}"
            key_file.write_text(DEFAULT_KEY)
            account = {"api_key_file": str(key_file)}
        config["accounts"] = {"default": account}
        client = build_clients(ProvidersFile.model_validate({"providers": {"p": config}}), policy=FAST)["p"]
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()


def _create(emulator: Emulator, dialect: str) -> dict[int, str]:
    ids = {}
    for spec in SPECS:
        ids[spec.i] = emulator.create_batch(
            dialect,
            metadata={"team": spec.team},
            model=spec.model,
            endpoint="/v1/chat/completions" if spec.i % 6 else "/v1/embeddings",
            name=spec.name,
            created_at=spec.created_at,
            status="in_progress" if spec.running else "completed",
        )
    return ids


async def _walk(client: ProviderClient, f: ListFilter) -> tuple[list[str], int, list[int]]:
    """Every page to the end: the matching ids, the pages walked, the items each page listed."""
    found: list[str] = []
    listed: list[int] = []
    cursor: str | None = None
    while True:
        page = await client.list_page("default", f, cursor, page_size=PAGE)
        found.extend(b.batch_id for b in page.batches)
        listed.append(page.listed)
        if page.next_cursor is None:
            return found, len(listed), listed
        cursor = page.next_cursor
        assert len(listed) < 50, "the pager does not end"


def _queries(emulator: Emulator) -> list[dict[str, list[str]]]:
    return [parse_qs(r["query"]) for r in emulator.list_requests()]


# (dialect, filter, which specs match, what every list request's query must hold)
CASES: list[tuple[str, ListFilter, Callable[[Spec], bool], dict[str, list[str]]]] = [  # (the test's ``Case``)
    *[
        (
            d,
            ListFilter(statuses=RUNNING, metadata={"team": "a"}, model="model-x"),
            lambda s: s.running and s.team == "a" and s.model == "model-x",
            {"limit": [str(PAGE)]},
        )
        for d in ("openai", "siliconflow", "dashscope", "deepinfra", "azure")
    ],
    (
        "mistral",
        ListFilter(statuses=RUNNING, metadata={"team": "a"}, model="model-x", created_after=BASE + 40),
        lambda s: s.running and s.team == "a" and s.model == "model-x" and s.created_at >= BASE + 40,
        {"status": ["QUEUED", "RUNNING"], "model": ["model-x"], "page_size": [str(PAGE)], "order_by": ["-created"]},
    ),
    (
        "anthropic",
        ListFilter(statuses=RUNNING, created_after=BASE + 120),
        lambda s: s.running and s.created_at >= BASE + 120,
        {"limit": [str(PAGE)]},
    ),
    (
        "together",
        ListFilter(statuses=RUNNING, model="model-y", created_before=BASE + 200),
        lambda s: s.running and s.model == "model-y" and s.created_at < BASE + 200,
        {},
    ),
    (
        "xai",
        ListFilter(statuses=RUNNING, name_prefix="kill-"),
        lambda s: s.running and s.name.startswith("kill-"),
        {"limit": [str(PAGE)]},
    ),
    (
        "gemini",
        ListFilter(statuses=RUNNING, name_prefix="kill-", model="model-x"),
        lambda s: s.running and s.name.startswith("kill-") and s.model == "model-x",
        {"pageSize": [str(PAGE)]},
    ),
    (
        "vertex",
        ListFilter(statuses=RUNNING, metadata={"team": "b"}, created_before=BASE + 150),
        lambda s: s.running and s.team == "b" and s.created_at < BASE + 150,
        {"pageSize": [str(PAGE)]},
    ),
    (
        "bedrock",
        ListFilter(statuses=frozenset({BatchStatus.IN_PROGRESS}), name_prefix="kill-", created_after=BASE + 30),
        lambda s: s.running and s.name.startswith("kill-") and s.created_at >= BASE + 30,
        {"statusEquals": ["InProgress"], "nameContains": ["kill-"], "maxResults": [str(PAGE)]},
    ),
]


Case = tuple[str, ListFilter, Callable[[Spec], bool], dict[str, list[str]]]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
async def test_list_page_walks_every_page_and_returns_exactly_the_matches(
    emulator: Emulator, make_client: MakeClient, case: Case
) -> None:
    dialect, f, expected, sent = case
    ids = _create(emulator, dialect)
    client = make_client(dialect)
    found, pages, listed = await _walk(client, f)
    want = {ids[s.i] for s in SPECS if expected(s)}
    assert want, "the case must match something"
    assert len(want) < COUNT, "the case must leave something out"
    assert sorted(found) == sorted(want) and len(found) == len(set(found))
    queries = _queries(emulator)
    assert len(queries) == pages  # one request per page: no retries, no hidden extra calls
    for query in queries:
        for name, values in sent.items():
            assert sorted(query.get(name, [])) == values, (name, query)
    if dialect == "together":
        assert pages == 1 and listed == [COUNT]  # one unpaginated array
    else:
        assert pages > 1 and all(n <= PAGE for n in listed)
    for query, previous in zip(queries[1:], queries, strict=False):  # each page continues where the last ended
        assert query != previous


async def test_anthropic_stops_at_the_first_page_older_than_created_after(
    emulator: Emulator, make_client: MakeClient
) -> None:
    _create(emulator, "anthropic")
    _, pages, _ = await _walk(make_client("anthropic"), ListFilter(created_after=BASE + 200))
    # batches 20..23 are newer than the bound: page 1 holds 23..20, page 2 (19..16) is already older: stop there
    assert pages == 2 < COUNT // PAGE
    assert [q.get("after_id") is not None for q in _queries(emulator)] == [False, True]


async def test_vertex_sends_statuses_times_and_labels_as_one_filter(
    emulator: Emulator, make_client: MakeClient
) -> None:
    _create(emulator, "vertex")
    f = ListFilter(statuses=RUNNING, metadata={"team": "b"}, created_after=BASE, created_before=BASE + 150)
    found, _, listed = await _walk(make_client("vertex"), f)
    (expression,) = {q["filter"][0] for q in _queries(emulator)}
    states = " OR ".join(f'state="JOB_STATE_{w}"' for w in ("PAUSED", "PENDING", "QUEUED", "RUNNING", "UPDATING"))
    assert expression.startswith(f"({states}) AND ")
    assert 'createTime>="' in expression and 'createTime<"' in expression and 'labels.team="b"' in expression
    assert sum(listed) == len(found)  # the server filtered: every item listed matched


async def test_mistral_pages_by_number_with_total(emulator: Emulator, make_client: MakeClient) -> None:
    _create(emulator, "mistral")
    found, pages, _ = await _walk(make_client("mistral"), ListFilter())
    assert len(found) == COUNT and pages == COUNT // PAGE
    assert [q["page"] for q in _queries(emulator)] == [[str(n)] for n in range(pages)]


async def test_a_batch_started_while_listing_is_found_by_the_next_walk(
    emulator: Emulator, make_client: MakeClient
) -> None:
    """What a standing kill relies on: a batch created after one sweep is in the next sweep's list."""
    client = make_client("openai")
    _create(emulator, "openai")
    f = ListFilter(statuses=RUNNING, metadata={"team": "late"})
    assert (await _walk(client, f))[0] == []
    late = emulator.create_batch("openai", metadata={"team": "late"})
    assert (await _walk(client, f))[0] == [late]


async def test_unsupported_criteria_and_bad_cursors_send_nothing(emulator: Emulator, make_client: MakeClient) -> None:
    for dialect in ("anthropic", "together", "gemini", "xai"):
        with pytest.raises(UnsupportedCriterion, match=f"^{dialect} cannot evaluate metadata"):
            await make_client(dialect).list_page("default", ListFilter(metadata={"team": "a"}), None)
    with pytest.raises(Rejected):
        await make_client("mistral").list_page("default", ListFilter(), "not-a-page")
    assert emulator.list_requests() == []


async def test_list_requests_are_authenticated_and_their_secrets_redacted(
    emulator: Emulator, make_client: MakeClient
) -> None:
    _create(emulator, "anthropic")
    await make_client("anthropic").list_page("default", ListFilter(), None)
    (request,) = emulator.list_requests()
    assert request["status"] == 200 and request["path"] == "/anthropic/v1/messages/batches"
    assert request["headers"]["x-api-key"] == "[redacted]"


async def test_a_throttled_list_is_retried_after_the_wait_and_slows_the_account(
    emulator: Emulator, make_client: MakeClient
) -> None:
    ids = _create(emulator, "openai")
    emulator.set_quota("openai", 1, retry_after_s=0.2)  # one request a second, then 429 with Retry-After
    try:
        client = make_client("openai")
        found, pages, _ = await _walk(client, ListFilter())
    finally:
        emulator.set_quota("openai", None)
    assert sorted(found) == sorted(ids.values())
    statuses = [r["status"] for r in emulator.list_requests()]
    assert statuses.count(200) == pages == COUNT // PAGE and 429 in statuses
    assert client.gates["default"].adaptive.throttled == statuses.count(429)


@pytest.mark.parametrize("dialect", ["openai", "anthropic", "gemini", "vertex", "bedrock", "xai"])
async def test_a_cursor_the_provider_refuses_is_rejected_after_one_request(
    emulator: Emulator, make_client: MakeClient, dialect: str
) -> None:
    """A stale or forged cursor gets the provider's 400: ``rejected``, not retried, nothing else sent."""
    _create(emulator, dialect)
    with pytest.raises(Rejected) as info:
        await make_client(dialect).list_page("default", ListFilter(), "no-such-cursor")
    assert info.value.http_status == 400
    assert [r["status"] for r in emulator.list_requests()] == [400]


async def test_azure_classic_lists_with_its_api_version(emulator: Emulator, make_client: MakeClient) -> None:
    ids = _create(emulator, "azure")
    client = make_client("azure", base_url=emulator.azure_classic_base_url(), api_version="2024-10-21")
    found, pages, _ = await _walk(client, ListFilter(metadata={"team": "a"}))
    assert sorted(found) == sorted(ids[s.i] for s in SPECS if s.team == "a") and pages == COUNT // PAGE
    for request in emulator.list_requests():
        assert request["path"] == "/azure/openai/batches"
        assert parse_qs(request["query"])["api-version"] == ["2024-10-21"]
