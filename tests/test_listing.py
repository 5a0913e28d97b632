"""Listing for selectors: ``ListFilter.matches``, each dialect's list request and page parsing, ``list_page``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from worker import retry
from worker.config import ProvidersFile
from worker.contract import BatchStatus
from worker.errors import Rejected, Retryable
from worker.providers import DIALECTS, ListedBatch, ListFilter, UnsupportedCriterion, build_clients, dialect_for
from worker.providers.listing import MAX_CURSOR_CHARS
from worker.telemetry import metrics

RUNNING = frozenset({BatchStatus.IN_PROGRESS, BatchStatus.VALIDATING, BatchStatus.QUEUED})


@pytest.fixture(autouse=True)
def _fast_retries() -> Iterator[None]:
    with retry.testing(attempts=3):
        yield


def _listed(**fields: Any) -> ListedBatch:
    base: dict[str, Any] = {
        "batch_id": "b1",
        "status": BatchStatus.IN_PROGRESS,
        "provider_status": "in_progress",
        "created_at": 1000,
        "metadata": {"team": "a", "env": "prod"},
        "model": "models/gemini-2.5-flash",
        "endpoint": "/v1/chat/completions",
        "name": "nightly-eval-7",
    }
    return ListedBatch(**(base | fields))


# --- ListFilter.matches --------------------------------------------------------------------------------------


def test_an_empty_filter_sets_no_criterion_and_matches_everything() -> None:
    assert ListFilter().criteria() == frozenset()
    assert ListFilter().matches(_listed())
    assert ListFilter().matches(_listed(created_at=None, metadata={}, model=None, name=None))


@pytest.mark.parametrize(
    ("f", "expected"),
    [
        (ListFilter(statuses=RUNNING), True),
        (ListFilter(statuses=frozenset({BatchStatus.CANCELLING})), False),
        (ListFilter(statuses=frozenset()), False),  # set but empty: nothing matches, it is not "no constraint"
        (ListFilter(created_after=1000), True),  # inclusive
        (ListFilter(created_after=1001), False),
        (ListFilter(created_before=1000), False),  # exclusive
        (ListFilter(created_before=1001), True),
        (ListFilter(model="models/gemini-2.5-flash"), True),
        (ListFilter(model="gemini-2.5-flash"), True),  # the last path part of the provider's model string
        (ListFilter(model="flash"), False),
        (ListFilter(endpoint="/v1/chat/completions"), True),
        (ListFilter(endpoint="/v1/embeddings"), False),
        (ListFilter(metadata={"team": "a"}), True),
        (ListFilter(metadata={"team": "a", "env": "prod"}), True),
        (ListFilter(metadata={"team": "a", "env": "dev"}), False),  # every pair must hold
        (ListFilter(metadata={"owner": "a"}), False),
        (ListFilter(name_prefix="nightly-"), True),
        (ListFilter(name_prefix="Nightly-"), False),  # case-sensitive
        (ListFilter(statuses=RUNNING, metadata={"team": "a"}, created_after=900, name_prefix="night"), True),
        (ListFilter(statuses=RUNNING, metadata={"team": "b"}, created_after=900, name_prefix="night"), False),
    ],
)
def test_matches_every_set_criterion(f: ListFilter, expected: bool) -> None:
    assert f.matches(_listed()) is expected


def test_missing_item_fields_never_match_a_criterion_on_them() -> None:
    bare = _listed(created_at=None, metadata={}, model=None, endpoint=None, name=None)
    for f in (
        ListFilter(created_after=0),
        ListFilter(created_before=2**40),
        ListFilter(model="x"),
        ListFilter(endpoint="/v1/chat/completions"),
        ListFilter(metadata={"team": "a"}),
        ListFilter(name_prefix=""),
    ):
        assert not f.matches(bare), f


def test_criteria_names_exactly_what_is_set_and_the_filter_is_frozen() -> None:
    source = {"team": "a"}
    f = ListFilter(statuses=RUNNING, metadata=source, name_prefix="x")
    assert f.criteria() == {"statuses", "metadata", "name_prefix"}
    source["team"] = "b"  # the caller's dict changing later does not change the filter
    assert f.metadata == {"team": "a"}
    with pytest.raises(TypeError):
        f.metadata["team"] = "c"  # type: ignore[index]


# --- what each dialect supports --------------------------------------------------------------------------------


def test_every_dialect_states_every_criterion() -> None:
    for dialect in DIALECTS.values():
        assert set(dialect.list_support) == {
            "statuses",
            "created_after",
            "created_before",
            "model",
            "endpoint",
            "metadata",
            "name_prefix",
        }, dialect.name


@pytest.mark.parametrize(
    ("dialect", "f", "criterion"),
    [
        ("anthropic", ListFilter(metadata={"team": "a"}), "metadata"),
        ("anthropic", ListFilter(model="claude"), "model"),
        ("together", ListFilter(metadata={"team": "a"}), "metadata"),
        ("gemini", ListFilter(metadata={"team": "a"}), "metadata"),
        ("xai", ListFilter(metadata={"team": "a"}), "metadata"),
        ("xai", ListFilter(model="grok"), "model"),
        ("bedrock", ListFilter(metadata={"team": "a"}), "metadata"),
        ("openai", ListFilter(name_prefix="x"), "name_prefix"),
    ],
)
def test_an_unsupported_criterion_names_provider_and_field(dialect: str, f: ListFilter, criterion: str) -> None:
    with pytest.raises(UnsupportedCriterion) as info:
        dialect_for(dialect).check_filter(f)
    assert info.value.provider == dialect and info.value.criterion == criterion
    assert str(info.value).startswith(f"{dialect} cannot evaluate {criterion}: ")


def test_statuses_and_times_are_evaluable_everywhere() -> None:
    f = ListFilter(statuses=RUNNING, created_after=1, created_before=2)
    for dialect in DIALECTS.values():
        dialect.check_filter(f)


# --- the OpenAI shape (openai, siliconflow, dashscope, deepinfra, azure; Groq by configuration) ----------------


def _openai_item(batch_id: str, status: str = "in_progress", created_at: int = 1000, **extra: Any) -> dict[str, Any]:
    return {"id": batch_id, "object": "batch", "status": status, "created_at": created_at} | extra


@pytest.mark.parametrize("name", ["openai", "siliconflow", "dashscope", "deepinfra", "azure"])
def test_openai_shape_list_request(name: str) -> None:
    dialect = dialect_for(name)
    assert dialect.list_request(ListFilter(), None, 100) == ("/batches", {"limit": "100"})
    assert dialect.list_request(ListFilter(), "batch_9", 20) == ("/batches", {"limit": "20", "after": "batch_9"})


def test_openai_page_filters_on_our_side_and_continues_after_last_id() -> None:
    body = {
        "object": "list",
        "data": [
            _openai_item("b1", metadata={"team": "a"}, model="gpt-4o", endpoint="/v1/chat/completions"),
            _openai_item("b2", metadata={"team": "b"}),
            _openai_item("b3", status="cancelling", metadata={"team": "a"}),
            _openai_item("b4", status="Validating", metadata={"team": "a", "n": 3}),  # Azure's capitalised word
        ],
        "first_id": "b1",
        "last_id": "b4",
        "has_more": True,
    }
    f = ListFilter(statuses=RUNNING, metadata={"team": "a"})
    page = dialect_for("openai").parse_list(body, f, None)
    assert page.listed == 4 and page.next_cursor == "b4"
    assert [b.batch_id for b in page.batches] == ["b1", "b4"]
    first = page.batches[0]
    assert (first.model, first.endpoint, first.created_at, first.provider_status) == (
        "gpt-4o",
        "/v1/chat/completions",
        1000,
        "in_progress",
    )
    assert page.batches[1].status is BatchStatus.VALIDATING and page.batches[1].metadata == {"team": "a"}


def test_openai_page_end_and_groq_without_has_more() -> None:
    dialect = dialect_for("openai")
    done = dialect.parse_list({"data": [_openai_item("b1")], "has_more": False, "last_id": "b1"}, ListFilter(), "x")
    assert done.next_cursor is None and done.listed == 1
    groq = dialect.parse_list({"object": "list", "data": [_openai_item("b1")]}, ListFilter(), None)
    assert groq.next_cursor is None and [b.batch_id for b in groq.batches] == ["b1"]
    empty = dialect.parse_list({"data": [], "has_more": True}, ListFilter(), None)
    assert empty.next_cursor is None and empty.listed == 0  # "more" with nothing to continue after is the end


def test_an_odd_item_is_listed_as_unknown_and_a_non_list_is_retryable() -> None:
    dialect = dialect_for("openai")
    page = dialect.parse_list({"data": [{"id": "b1", "status": 7}], "has_more": False}, ListFilter(), None)
    assert page.batches[0].status is BatchStatus.UNKNOWN and page.batches[0].created_at is None
    for body in ({"error": {"message": "no"}}, "<html>bad gateway</html>", {"data": [{"status": "x"}]}, [1]):
        with pytest.raises(Retryable):
            dialect.parse_list(body, ListFilter(), None)


def test_an_item_whose_id_could_not_reach_a_url_is_left_out() -> None:
    body = {"data": [_openai_item("../x"), _openai_item("ok")], "has_more": False}
    page = dialect_for("openai").parse_list(body, ListFilter(), None)
    assert page.listed == 2 and [b.batch_id for b in page.batches] == ["ok"]


# --- ProviderClient.list_page over httpx.MockTransport -----------------------------------------------------------


def _providers(dialect: str = "openai") -> ProvidersFile:
    return ProvidersFile.model_validate(
        {"providers": {"p": {"dialect": dialect, "accounts": {"default": {"api_key_env": "BCW_TEST_KEY"}}}}}
    )


def _client(handler: Any, monkeypatch: pytest.MonkeyPatch, dialect: str = "openai") -> Any:
    monkeypatch.setenv("BCW_TEST_KEY", "sk-test-secret")
    return build_clients(_providers(dialect), transport_factory=lambda: httpx.MockTransport(handler))["p"]


async def test_list_page_sends_the_dialects_query_retries_and_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) == 1:
            return httpx.Response(503, json={"error": {"message": "overloaded"}})
        return httpx.Response(200, json={"data": [_openai_item("b2")], "has_more": True, "last_id": "b2"})

    before = metrics.LIST_REQUESTS.labels("p", "retryable")._value.get()
    client = _client(handler, monkeypatch)
    page = await client.list_page("default", ListFilter(), "b1&limit=5", page_size=500)
    await client.aclose()
    assert page.next_cursor == "b2" and [b.batch_id for b in page.batches] == ["b2"]
    assert len(seen) == 2
    url = seen[-1].url
    assert url.path == "/v1/batches" and dict(url.params) == {"limit": "100", "after": "b1&limit=5"}  # capped, quoted
    assert seen[-1].headers["authorization"] == "Bearer sk-test-secret"
    assert metrics.LIST_REQUESTS.labels("p", "retryable")._value.get() == before + 1


async def test_list_page_refuses_before_sending(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(500)

    client = _client(handler, monkeypatch, "anthropic")
    with pytest.raises(UnsupportedCriterion):
        await client.list_page("default", ListFilter(metadata={"team": "a"}), None)
    for bad in ("", "a b", "x" * (MAX_CURSOR_CHARS + 1), "a\nb", "é"):
        with pytest.raises(Rejected) as info:
            await client.list_page("default", ListFilter(), bad)
        assert info.value.code == "invalid_cursor"
    with pytest.raises(Rejected) as unknown:
        await client.list_page("nobody", ListFilter(), None)
    assert unknown.value.code == "unknown_account"
    await client.aclose()
    assert sent == []
