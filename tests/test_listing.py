"""Listing for selectors: ``ListFilter.matches``, each dialect's list request and page parsing, ``list_page``."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
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
    assert hash(f) == hash(ListFilter(statuses=RUNNING, metadata={"team": "a"}, name_prefix="x"))
    assert len({_listed(), _listed()}) == 1  # both are hashable despite their mappings
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
    assert client.list_support["metadata"] == "unsupported" and client.list_support["created_after"] == "client"
    with pytest.raises(UnsupportedCriterion):
        client.check_filter(ListFilter(model="claude"))
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


# --- the other dialects' requests and pages ------------------------------------------------------------------


def test_anthropic_pages_after_id_up_to_1000_and_stops_past_created_after() -> None:
    dialect = dialect_for("anthropic")
    assert dialect.list_request(ListFilter(), None, 1000) == ("/messages/batches", {"limit": "1000"})
    assert dialect.list_request(ListFilter(), "msgbatch_9", 20)[1] == {"limit": "20", "after_id": "msgbatch_9"}

    def item(batch_id: str, created: str) -> dict[str, Any]:
        counts = {"processing": 1, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        return {"id": batch_id, "processing_status": "in_progress", "created_at": created, "request_counts": counts}

    body = {
        "data": [item("m3", "2026-12-03T05:00:00Z"), item("m2", "2026-12-03T04:00:00Z")],
        "has_more": True,
        "last_id": "m2",
    }
    after_4 = int(datetime(2026, 12, 3, 4, tzinfo=UTC).timestamp())
    page = dialect.parse_list(body, ListFilter(created_after=after_4), None)
    assert [b.batch_id for b in page.batches] == ["m3", "m2"] and page.next_cursor == "m2"
    later = dialect.parse_list(body, ListFilter(created_after=after_4 + 1), None)
    assert [b.batch_id for b in later.batches] == ["m3"] and later.next_cursor is None  # m2 is older: stop


def test_mistral_sends_its_server_filters_and_pages_by_number() -> None:
    dialect = dialect_for("mistral")
    f = ListFilter(statuses=RUNNING, model="mistral-small", created_after=1_800_000_000, metadata={"team": "a"})
    path, params = dialect.list_request(f, None, 50)
    assert path == "/batch/jobs"
    assert params == {
        "page": "0",
        "page_size": "50",
        "order_by": "-created",
        "status": ["QUEUED", "RUNNING"],
        "model": "mistral-small",
        "created_after": datetime.fromtimestamp(1_800_000_000 - 1, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }  # metadata is matched on our side (the server's reading of it is unconfirmed)
    assert dialect.list_request(f, "3/50", 10)[1]["page"] == "3"
    assert dialect.list_request(f, "3/50", 10)[1]["page_size"] == "50"  # the first page's size, kept
    assert "status" not in dialect.list_request(ListFilter(statuses=frozenset({BatchStatus.UNKNOWN})), None, 5)[1]

    def job(i: int, team: str) -> dict[str, Any]:
        metadata = {"team": team}
        return {
            "id": f"j{i}",
            "status": "RUNNING",
            "created_at": 1_800_000_100,
            "metadata": metadata,
            "model": "mistral-small",
        }

    first = dialect.parse_list({"data": [job(1, "a"), job(2, "b")], "total": 5}, f, None)
    assert [b.batch_id for b in first.batches] == ["j1"] and first.next_cursor == "1/2"
    last = dialect.parse_list({"data": [job(5, "a")], "total": 5}, f, "2/2")
    assert last.next_cursor is None
    for bad in ("x", "1", "1/0", "-1/2", "1/2/3"):
        with pytest.raises(Rejected):
            dialect.list_request(f, bad, 10)


def test_together_lists_one_bare_array() -> None:
    dialect = dialect_for("together")
    assert dialect.list_request(ListFilter(), None, 100) == ("/batches", {})
    body = [
        {"id": "t1", "status": "IN_PROGRESS", "created_at": "2026-12-03T05:00:00Z", "model_id": "llama"},
        {"id": "t2", "status": "COMPLETED", "created_at": "2026-12-03T05:00:00Z", "model_id": "llama"},
    ]
    page = dialect.parse_list(body, ListFilter(statuses=RUNNING, model="llama"), None)
    assert [b.batch_id for b in page.batches] == ["t1"] and page.next_cursor is None and page.listed == 2
    with pytest.raises(Retryable):
        dialect.parse_list({"data": body}, ListFilter(), None)


def test_xai_pages_by_token_and_matches_names() -> None:
    dialect = dialect_for("xai")
    assert dialect.list_request(ListFilter(), "tok", 10)[1] == {"limit": "10", "pagination_token": "tok"}
    body = {
        "batches": [
            {"batch_id": "x1", "name": "kill-1", "state": {"num_requests": 2, "num_pending": 2}},
            {"batch_id": "x2", "name": "keep-2", "state": {"num_requests": 2, "num_pending": 2}},
        ],
        "pagination_token": "next",
    }
    page = dialect.parse_list(body, ListFilter(name_prefix="kill-"), None)
    assert [(b.batch_id, b.name, b.status) for b in page.batches] == [("x1", "kill-1", BatchStatus.IN_PROGRESS)]
    assert page.next_cursor == "next"
    assert dialect.parse_list({}, ListFilter(), "next").next_cursor is None  # proto JSON: empty list, no token


def test_gemini_reads_operations_and_strips_the_batches_prefix() -> None:
    dialect = dialect_for("gemini")
    assert dialect.list_request(ListFilter(), "t", 7) == ("/batches", {"pageSize": "7", "pageToken": "t"})
    meta = {"state": "BATCH_STATE_RUNNING", "displayName": "kill-1", "model": "models/gemini-2.5-flash"}
    body = {"operations": [{"name": "batches/abc-1", "metadata": meta}], "nextPageToken": "n"}
    page = dialect.parse_list(body, ListFilter(model="gemini-2.5-flash", name_prefix="kill"), None)
    assert [(b.batch_id, b.status) for b in page.batches] == [("abc-1", BatchStatus.IN_PROGRESS)]
    assert page.next_cursor == "n"
    with pytest.raises(Retryable):
        dialect.parse_list({"operations": [{"name": "operations/x"}]}, ListFilter(), None)


def test_vertex_builds_one_filter_and_reads_labels() -> None:
    dialect = dialect_for("vertex")
    f = ListFilter(
        statuses=frozenset({BatchStatus.CANCELLING}), created_after=0 + 86_400, metadata={"team": "a", "env": "p-1"}
    )
    path, params = dialect.list_request(f, None, 10)
    assert path == "/batchPredictionJobs" and params["pageSize"] == "10"
    assert params["filter"] == (
        '(state="JOB_STATE_CANCELLING") AND createTime>="1970-01-02T00:00:00Z" AND labels.env="p-1" AND labels.team="a"'
    )
    assert "filter" not in dialect.list_request(ListFilter(), None, 10)[1]
    for key, value in (("Team", "a"), ("team", "A"), ("team", 'a" OR state!="x'), ("1team", "a"), ("t", "x" * 64)):
        with pytest.raises(UnsupportedCriterion, match=r"^vertex cannot evaluate metadata"):
            dialect.check_filter(ListFilter(metadata={key: value}))
    job = {
        "name": "projects/p/locations/l/batchPredictionJobs/123",
        "state": "JOB_STATE_PAUSED",
        "labels": {"team": "a"},
        "displayName": "kill-1",
        "createTime": "2026-12-03T05:00:00.123456789Z",
    }
    page = dialect.parse_list({"batchPredictionJobs": [job]}, ListFilter(statuses=RUNNING), None)
    assert [(b.batch_id, b.metadata, b.name) for b in page.batches] == [("123", {"team": "a"}, "kill-1")]
    assert page.next_cursor is None


def test_bedrock_sends_one_status_times_and_name_and_reads_arns() -> None:
    dialect = dialect_for("bedrock")
    f = ListFilter(
        statuses=frozenset({BatchStatus.IN_PROGRESS}), created_after=100, created_before=200, name_prefix="k"
    )
    path, params = dialect.list_request(f, "tok", 2000)
    assert path == "/model-invocation-jobs"
    assert params == {
        "maxResults": "2000",
        "sortBy": "CreationTime",
        "sortOrder": "Descending",
        "nextToken": "tok",
        "statusEquals": "InProgress",
        "submitTimeAfter": "1970-01-01T00:01:39Z",
        "submitTimeBefore": "1970-01-01T00:03:21Z",
        "nameContains": "k",
    }
    assert dialect.max_page_size == 1000  # list_page cuts 2000 down to this
    several = dialect.list_request(ListFilter(statuses=RUNNING), None, 10)[1]
    assert "statusEquals" not in several  # three statuses: one call, matched on our side
    summary = {
        "jobArn": "arn:aws:bedrock:us-east-1:1:model-invocation-job/abcdefghijkl",
        "jobName": "kill-1",
        "status": "Scheduled",
        "submitTime": "2026-12-03T05:00:00Z",
        "modelId": "anthropic.claude",
    }
    page = dialect.parse_list(
        {"invocationJobSummaries": [summary], "nextToken": "n"}, ListFilter(statuses=RUNNING), None
    )
    assert [(b.batch_id, b.status, b.name) for b in page.batches] == [("abcdefghijkl", BatchStatus.QUEUED, "kill-1")]
    assert page.next_cursor == "n"


def test_dashscope_is_newest_first_and_names_are_ds_name() -> None:
    dialect = dialect_for("dashscope")
    item = {"id": "d1", "status": "in_progress", "created_at": 100, "metadata": {"ds_name": "nightly"}}
    page = dialect.parse_list(
        {"data": [item], "has_more": True, "last_id": "d1"}, ListFilter(name_prefix="night"), None
    )
    assert [b.name for b in page.batches] == ["nightly"] and page.next_cursor == "d1"
    done = dialect.parse_list({"data": [item], "has_more": True, "last_id": "d1"}, ListFilter(created_after=101), None)
    assert done.batches == () and done.next_cursor is None  # newest first: nothing later can be newer


def test_an_openai_compatible_list_without_the_field_refuses_the_selector() -> None:
    """Groq's items carry no ``model``: a model selector must fail loudly, not match nothing."""
    dialect = dialect_for("openai")
    body = {"object": "list", "data": [_openai_item("b1", metadata={"team": "a"})]}
    with pytest.raises(UnsupportedCriterion, match=r"^openai cannot evaluate model: .*carry no 'model' field"):
        dialect.parse_list(body, ListFilter(model="llama"), None)
    assert dialect.parse_list(body, ListFilter(metadata={"team": "a"}), None).batches  # metadata is there
    nulls = {"data": [_openai_item("b1", model=None, metadata=None)], "has_more": False}
    assert dialect.parse_list(nulls, ListFilter(model="x", metadata={"k": "v"}), None).batches == ()
