"""Each official SDK's own list call and pager iterates the emulator's batch list to the end.

Like ``test_sdk_fidelity`` for cancel and retrieve: if the emulator's list pages drifted from what a provider
sends (a renamed cursor, a missing ``has_more``, a token the pager cannot pass back, an item the SDK's model
refuses), the SDK that real users page with would stop early, loop, or raise here. Every test creates more
batches than one page holds, lets the SDK page through them, and checks that every batch was seen exactly once,
that the emulator answered the number of list requests the page size implies, and (where the SDK's models are
lenient) that every item passes the strict check ``sdk_adapters`` already uses for single batches.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import anthropic
import botocore.config
import botocore.session
import groq
import httpx
import mistralai.client
import openai
import pytest
import together
from anthropic.types.messages import MessageBatch
from google import genai
from google.cloud import aiplatform_v1
from google.cloud.aiplatform_v1.services.job_service.transports.rest import JobServiceRestTransport
from google.genai import types as genai_types
from google.protobuf import json_format
from xai_sdk.proto import batch_pb2

from batch_cancel_emulator.testing import DEFAULT_AWS_KEY, DEFAULT_KEY, Emulator
from tests.e2e import sdk_adapters
from tests.e2e.test_sdk_fidelity import DOCUMENTED_DEVIATIONS

COUNT = 11
PAGE = 4
PAGES = math.ceil(COUNT / PAGE)


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator() as emu:
        yield emu


@pytest.fixture
def emu(emulator: Emulator) -> Emulator:
    emulator.reset()
    return emulator


def _create(emu: Emulator, dialect: str, count: int = COUNT) -> set[str]:
    now = int(datetime.now(UTC).timestamp())
    return {
        emu.create_batch(
            dialect,
            metadata={"team": "a", "n": str(i)},
            model="model-x",
            endpoint="/v1/chat/completions",
            name=f"kill-{i}",
            created_at=now - 100 + i,
        )
        for i in range(count)
    }


def _lists(emu: Emulator) -> int:
    return len(emu.list_requests())


def _strict(problems: set[str], where: str) -> None:
    assert problems == set(), f"{where}: the SDK's model refuses {sorted(problems)}"


# --- OpenAI shape ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["openai", "siliconflow", "dashscope", "deepinfra", "azure"])
def test_openai_sdk_auto_pagination_walks_every_page(emu: Emulator, dialect: str) -> None:
    ids = _create(emu, dialect)
    if dialect == "azure":
        client = openai.OpenAI(
            api_key="unused", base_url=emu.base_url("azure"), default_headers={"api-key": DEFAULT_KEY}, max_retries=0
        )
    else:
        client = openai.OpenAI(api_key=DEFAULT_KEY, base_url=emu.base_url(dialect), max_retries=0)
    seen = [batch.id for batch in client.batches.list(limit=PAGE)]  # SyncCursorPage: after=<last id>, has_more
    assert sorted(seen) == sorted(ids)
    assert _lists(emu) == PAGES
    strict = sdk_adapters._pydantic_problems(openai.types.Batch)
    page = client.batches.with_raw_response.list(limit=PAGE).http_response.json()
    assert set(page) == {"object", "data", "first_id", "last_id", "has_more"}
    allowed = DOCUMENTED_DEVIATIONS.get(f"openai-sdk:{dialect}", set())
    for item in page["data"]:
        _strict(strict(json.dumps(item).encode()) - allowed, dialect)


def test_azure_classic_sdk_pages_with_the_api_version(emu: Emulator) -> None:
    ids = _create(emu, "azure")
    client = openai.AzureOpenAI(
        api_key=DEFAULT_KEY, azure_endpoint=emu.url + "/azure", api_version="2024-10-21", max_retries=0
    )
    assert sorted(b.id for b in client.batches.list(limit=PAGE)) == sorted(ids)
    assert all("api-version=2024-10-21" in r["query"] for r in emu.list_requests())


def test_groq_sdk_reads_the_list(emu: Emulator) -> None:
    """Groq's SDK models one answer (``data``, ``object``), no pager: the emulator's OpenAI page must parse."""
    ids = _create(emu, "openai", count=PAGE)
    client = groq.Groq(api_key=DEFAULT_KEY, base_url=emu.url, max_retries=0)
    answer = client.batches.list()
    assert sorted(b.id for b in answer.data) == sorted(ids)
    assert _lists(emu) == 1


# --- the native APIs ---------------------------------------------------------------------------------------------


def test_anthropic_sdk_pager_walks_newest_first(emu: Emulator) -> None:
    ids = _create(emu, "anthropic")
    client = anthropic.Anthropic(api_key=DEFAULT_KEY, base_url=emu.url + "/anthropic", max_retries=0)
    seen = list(client.messages.batches.list(limit=PAGE))  # SyncPage: after_id=<last_id> while has_more
    assert sorted(b.id for b in seen) == sorted(ids)
    created = [b.created_at for b in seen]
    assert created == sorted(created, reverse=True)
    assert _lists(emu) == PAGES
    strict = sdk_adapters._pydantic_problems(MessageBatch)
    raw = client.messages.batches.with_raw_response.list(limit=PAGE).http_response.json()
    for item in raw["data"]:
        _strict(strict(json.dumps(item).encode()), "anthropic")


def test_mistral_sdk_pages_by_number_with_its_filters(emu: Emulator) -> None:
    ids = _create(emu, "mistral")
    other = emu.create_batch("mistral", model="model-z")
    client = mistralai.client.Mistral(api_key=DEFAULT_KEY, server_url=emu.url + "/mistral")
    seen: list[str] = []
    page = 0
    while True:  # mistralai has no auto-pager: page numbers until ``total`` is reached
        answer = client.batch.jobs.list(
            page=page,
            page_size=PAGE,
            model="model-x",
            status=["RUNNING", "QUEUED"],
            created_after=datetime.fromtimestamp(0, UTC),
        )
        data = answer.data or []
        seen += [job.id for job in data]
        page += 1
        if len(seen) >= answer.total or not data:
            break
    assert sorted(seen) == sorted(ids) and other not in seen
    queries = [r["query"] for r in emu.list_requests()]
    assert len(queries) == PAGES and all("model=model-x" in q and "status=RUNNING" in q for q in queries)


def test_together_sdk_reads_the_bare_array(emu: Emulator) -> None:
    ids = _create(emu, "together")
    client = together.Together(api_key=DEFAULT_KEY, base_url=emu.url + "/together", max_retries=0)
    answer = client.batches.list()
    assert sorted(str(b.id) for b in answer) == sorted(ids)
    assert _lists(emu) == 1


def test_xai_proto_parses_every_page_and_its_token(emu: Emulator) -> None:
    ids = _create(emu, "xai")
    http = httpx.Client(
        base_url=emu.base_url("xai"), headers={"Authorization": f"Bearer {DEFAULT_KEY}"}, trust_env=False
    )
    seen: list[str] = []
    token = ""
    with http:
        while True:
            params = {"limit": PAGE} | ({"pagination_token": token} if token else {})
            response = http.get("/batches", params=params)
            assert response.status_code == 200
            page = json_format.Parse(response.content, batch_pb2.ListBatchesResponse(), ignore_unknown_fields=False)
            seen += [b.batch_id for b in page.batches]
            assert all(b.name.startswith("kill-") for b in page.batches)
            token = page.pagination_token
            if not token:
                break
    assert sorted(seen) == sorted(ids) and _lists(emu) == PAGES


# --- the cloud providers -----------------------------------------------------------------------------------------


def test_google_genai_pager_walks_gemini_batches(emu: Emulator) -> None:
    ids = _create(emu, "gemini")
    options = genai_types.HttpOptions(base_url=emu.url + "/gemini", api_version="v1beta")
    client = genai.Client(api_key=DEFAULT_KEY, http_options=options)
    seen = list(client.batches.list(config={"page_size": PAGE}))  # Pager: pageToken while nextPageToken
    assert sorted(str(b.name).removeprefix("batches/") for b in seen) == sorted(ids)
    assert all(b.display_name and b.display_name.startswith("kill-") for b in seen)
    assert _lists(emu) == PAGES
    page = httpx.get(
        emu.base_url("gemini") + "/batches", params={"pageSize": PAGE}, headers={"x-goog-api-key": DEFAULT_KEY}
    ).json()
    assert set(page) == {"operations", "nextPageToken"}
    for item in page["operations"]:
        _strict(sdk_adapters._gemini_problems(json.dumps(item).encode()), "gemini")


def test_google_genai_pager_walks_vertex_jobs(emu: Emulator) -> None:
    ids = _create(emu, "vertex")
    options = genai_types.HttpOptions(base_url=emu.url + "/vertex", api_version="v1")
    client = genai.Client(
        vertexai=True,
        project=sdk_adapters.VERTEX_PROJECT,
        location=sdk_adapters.VERTEX_LOCATION,
        credentials=sdk_adapters._vertex_credentials(emu, DEFAULT_KEY),
        http_options=options,
    )
    seen = list(client.batches.list(config={"page_size": PAGE}))
    assert sorted(str(b.name).rsplit("/", 1)[-1] for b in seen) == sorted(ids)
    assert _lists(emu) == PAGES


def test_aiplatform_pager_walks_filtered_vertex_jobs(emu: Emulator) -> None:
    ids = _create(emu, "vertex")
    other = emu.create_batch("vertex", metadata={"team": "b"})
    transport = JobServiceRestTransport(
        host=emu.url.removeprefix("http://") + "/vertex",
        credentials=sdk_adapters._vertex_credentials(emu, DEFAULT_KEY),
        url_scheme="http",
    )
    bodies: list[bytes] = []
    transport._session.hooks["response"].append(lambda r, *_, **__: bodies.append(r.content))
    client = aiplatform_v1.JobServiceClient(transport=transport)
    parent = f"projects/{sdk_adapters.VERTEX_PROJECT}/locations/{sdk_adapters.VERTEX_LOCATION}"
    request = {"parent": parent, "page_size": PAGE, "filter": 'state="JOB_STATE_RUNNING" AND labels.team="a"'}
    seen = [job.name.rsplit("/", 1)[-1] for job in client.list_batch_prediction_jobs(request=request, retry=None)]
    assert sorted(seen) == sorted(ids) and other not in seen
    assert _lists(emu) == PAGES
    for body in bodies:  # every page: the discovery document's list response, and each job strictly
        page = json.loads(body)
        assert set(page) <= {"batchPredictionJobs", "nextPageToken"}
        aiplatform_v1.ListBatchPredictionJobsResponse.from_json(body, ignore_unknown_fields=False)
        for job in page["batchPredictionJobs"]:
            _strict(sdk_adapters._vertex_problems(json.dumps(job).encode()), "vertex")


def test_botocore_paginator_walks_bedrock_jobs(emu: Emulator) -> None:
    ids = _create(emu, "bedrock")
    stopped = emu.create_batch("bedrock", status="cancelled")
    access_key, secret = DEFAULT_AWS_KEY
    client: Any = botocore.session.get_session().create_client(
        "bedrock",
        endpoint_url=emu.url + "/bedrock",
        region_name="us-east-1",
        aws_access_key_id=access_key,
        aws_secret_access_key=secret,
        config=botocore.config.Config(retries={"mode": "standard", "total_max_attempts": 1}),
    )
    raw: list[bytes] = []
    client.meta.events.register("after-call.bedrock.*", lambda http_response, **_: raw.append(http_response.content))
    pages = client.get_paginator("list_model_invocation_jobs").paginate(
        statusEquals="InProgress", nameContains="kill-", PaginationConfig={"PageSize": PAGE}
    )
    seen = [job["jobArn"].rsplit("/", 1)[-1] for page in pages for job in page["invocationJobSummaries"]]
    assert sorted(seen) == sorted(ids) and stopped not in seen
    assert _lists(emu) == PAGES
    shape = sdk_adapters._BEDROCK_MODEL.operation_model("ListModelInvocationJobs").output_shape
    for body in raw:
        assert sdk_adapters._shape_problems(shape, json.loads(body), "") == []
