"""The emulator's list answers, called directly: pagination edges and the server filters' grammar."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from batch_cancel_emulator import listing
from batch_cancel_emulator.model import Attributes, Scenario, Store


def _store(dialect: str, count: int, **attributes: Any) -> Store:
    store = Store()
    for i in range(count):
        store.create(dialect, f"b{i}", Scenario(), Attributes(created_at=1_000 + i, **attributes))
    return store


def _get(store: Store, dialect: str, **query: Any) -> tuple[int, Any]:
    status, body, _ = listing.answer(store, dialect, urlencode(query, doseq=True).encode(), ("p-123456", "us-east1"))
    return status, json.loads(body)


def test_openai_pages_newest_first_with_after_and_has_more() -> None:
    store = _store("openai", 5)
    status, first = _get(store, "openai", limit=2)
    assert status == 200 and [b["id"] for b in first["data"]] == ["b4", "b3"] and first["has_more"]
    _, last = _get(store, "openai", limit=2, after="b1")
    assert [b["id"] for b in last["data"]] == ["b0"] and not last["has_more"] and last["last_id"] == "b0"
    assert _get(store, "openai", limit=101)[0] == 400
    assert _get(store, "openai", after="nobody")[0] == 400


def test_anthropic_before_id_pages_towards_newer_batches() -> None:
    store = _store("anthropic", 5)
    _, page = _get(store, "anthropic", limit=2, before_id="b1")
    assert [b["id"] for b in page["data"]] == ["b3", "b2"] and page["has_more"]


def test_mistral_filters_and_counts_total() -> None:
    store = _store("mistral", 4, model="m-a")
    store.create("mistral", "other", Scenario(status="completed"), Attributes(model="m-b", created_at=5_000))
    _, page = _get(store, "mistral", page=0, page_size=3, status=["RUNNING"], model="m-a")
    assert page["total"] == 4 and [b["id"] for b in page["data"]] == ["b3", "b2", "b1"]
    _, after = _get(store, "mistral", created_after="1970-01-01T00:16:42Z")  # 1002
    assert sorted(b["id"] for b in after["data"]) == ["b2", "b3", "other"]


def test_vertex_filter_grammar_and_refusals() -> None:
    store = _store("vertex", 3, metadata={"team": "a"})
    store.create("vertex", "9", Scenario(status="completed"), Attributes(metadata={"team": "b"}, created_at=2_000))
    ok = 'state="JOB_STATE_RUNNING" AND labels.team="a" AND createTime>="1970-01-01T00:16:41Z"'
    _, page = _get(store, "vertex", filter=ok)
    assert sorted(j["name"].rsplit("/", 1)[-1] for j in page["batchPredictionJobs"]) == ["b1", "b2"]
    _, either = _get(store, "vertex", filter='(state="JOB_STATE_SUCCEEDED" OR labels.team="zzz")')
    assert [j["name"].rsplit("/", 1)[-1] for j in either["batchPredictionJobs"]] == ["9"]
    for bad in ("state=RUNNING", 'model="x"', 'labels.team="a" OR state="x"', 'createTime>"yesterday"'):
        status, body = _get(store, "vertex", filter=bad)
        assert status == 400 and body["error"]["status"] == "INVALID_ARGUMENT", bad


def test_bedrock_filters_and_tokens() -> None:
    store = _store("bedrock", 3, name="kill-x")
    store.create("bedrock", "keep", Scenario(status="cancelled"), Attributes(name="keep", created_at=900))
    _, page = _get(store, "bedrock", statusEquals="InProgress", nameContains="kill", maxResults=2)
    assert [j["jobName"] for j in page["invocationJobSummaries"]] == ["kill-x", "kill-x"] and page["nextToken"]
    _, rest = _get(store, "bedrock", statusEquals="InProgress", maxResults=2, nextToken=page["nextToken"])
    assert len(rest["invocationJobSummaries"]) == 1 and "nextToken" not in rest
    _, old = _get(store, "bedrock", submitTimeBefore="1970-01-01T00:15:00Z", sortOrder="Ascending")
    assert [j["jobArn"].rsplit("/", 1)[-1] for j in old["invocationJobSummaries"]] == ["keep"]
    status, body = _get(store, "bedrock", nextToken="forged")
    assert status == 400 and body["__type"] == "ValidationException"
