"""The emulator against the providers' official SDKs: every answer of every scenario, parsed by the SDK itself.

If the emulator drifted from what real clients accept, the worker's end-to-end tests would prove nothing, so
each SDK's public cancel/retrieve calls are pointed at it (over real HTTP) and must accept each 200 into the
SDK's own models, validated strictly against the SDK's types too, and must raise the SDK's own exception for
each refusal (the cloud SDKs: google-genai for the Gemini API and Vertex AI, botocore for Bedrock; see
sdk_adapters.py for where their strictness comes from). Where a provider's documentation shows an answer the
SDK's types do not allow (SiliconFlow's ``in_queue``, Together's ``CANCELING``, Azure's reference examples),
the allowed deviation is listed here with its source, field by field; any other deviation fails.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from batch_cancel_emulator.testing import DEFAULT_KEY, Emulator
from tests.e2e.sdk_adapters import ADAPTERS, STAINLESS_ERRORS, Adapter, SdkError, anthropic_error_problems

STATUSES = ("validating", "in_progress", "finalizing", "cancelling", "completed", "failed", "expired", "cancelled")
#: Fields whose documented values the SDK's model types refuse (so strict validation may fail on exactly these).
DOCUMENTED_DEVIATIONS: dict[str, set[str]] = {
    # SiliconFlow's API reference: status "in_queue"; errors [] and request_counts {} on retrieve
    "openai-sdk:siliconflow": {"status", "errors", "request_counts"},
}
#: (scenario, adapter) → extra allowed deviations.
SWITCH_DEVIATIONS: dict[tuple[str, str], set[str]] = {
    # The legacy Together SDK lists CANCELING, the current one (installed) does not: research §g.
    ("cancel_follow", "together-sdk"): {"status"},
    ("status:cancelling", "together-sdk"): {"status"},
}
_AZURE_EXAMPLE = {"status", "created_at", "expires_at", "cancelling_at", "request_counts"}


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator() as emu:
        yield emu


@pytest.fixture(params=sorted(ADAPTERS))
def sdk(request: pytest.FixtureRequest, emulator: Emulator) -> Adapter:
    return ADAPTERS[request.param](emulator, DEFAULT_KEY)


def _accepts(sdk: Adapter, answer: Any, batch_id: str, allowed: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    if answer.parsed is None:  # a cancel answered with no batch (Gemini, Vertex, Bedrock): the SDK returned None
        assert not sdk.cancel_answers_batch and answer.raw == sdk.empty_cancel, (sdk.name, answer.raw)
        return
    assert sdk.batch_id_of(answer.parsed) == batch_id
    problems = sdk.strict_problems(answer.raw)
    assert problems <= DOCUMENTED_DEVIATIONS.get(sdk.name, set()) | allowed, (sdk.name, problems, answer.raw[:300])


def _refuses(sdk: Adapter, error: SdkError, status: int | None, sdk_class: str | None = None) -> None:
    assert error.http_status == status, (sdk.name, error)
    if status is None:
        return
    if sdk.name.startswith(("openai", "groq", "anthropic", "together")):
        assert error.sdk_class.__name__ == (sdk_class or STAINLESS_ERRORS[status]), (sdk.name, error.sdk_class)
    elif sdk.name == "mistralai-sdk":
        assert error.sdk_class.__name__ == "SDKError"
    elif sdk.name.startswith("google-genai"):
        assert error.sdk_class.__name__ == ("ClientError" if status < 500 else "ServerError"), error.sdk_class
    elif sdk.name == "botocore:bedrock":
        _botocore_refuses(error)
    elif sdk.name == "aiplatform:vertex":  # google.api_core's exception for the HTTP status, e.g. NotFound
        from google.api_core import exceptions

        assert issubclass(error.sdk_class, exceptions.GoogleAPICallError) and error.sdk_class.code == status
    if sdk.name == "anthropic-sdk":
        assert anthropic_error_problems(error.body) == set(), error.body


def test_cancel_then_follow_to_cancelled(sdk: Adapter, emulator: Emulator) -> None:
    batch = emulator.create_batch(sdk.dialect, cancelling_polls=1)
    allowed = SWITCH_DEVIATIONS.get(("cancel_follow", sdk.name), set())
    for answer in (sdk.cancel(batch), sdk.retrieve(batch), sdk.retrieve(batch)):
        _accepts(sdk, answer, batch, allowed)
    assert emulator.batch(sdk.dialect, batch)["status"] == "cancelled"


@pytest.mark.parametrize("status", STATUSES)
def test_every_status_is_accepted(sdk: Adapter, emulator: Emulator, status: str) -> None:
    batch = emulator.create_batch(sdk.dialect, status=status)
    _accepts(sdk, sdk.retrieve(batch), batch, SWITCH_DEVIATIONS.get((f"status:{status}", sdk.name), set()))


def test_cancel_of_a_finished_batch(sdk: Adapter, emulator: Emulator) -> None:
    batch = emulator.create_batch(sdk.dialect, status="completed")
    with pytest.raises(SdkError) as info:
        sdk.cancel(batch)
    _refuses(sdk, info.value, 409 if sdk.dialect in ("openai", "azure") else 400)
    # The other answer no source rules out: 200 with the batch unchanged.
    batch = emulator.create_batch(sdk.dialect, status="completed", finished_answer="batch")
    _accepts(sdk, sdk.cancel(batch), batch)


def test_cancelling_hidden_switch(sdk: Adapter, emulator: Emulator) -> None:
    batch = emulator.create_batch(sdk.dialect, cancelling_shown=False, cancelling_polls=1)
    for answer in (sdk.cancel(batch), sdk.retrieve(batch), sdk.retrieve(batch)):
        _accepts(sdk, answer, batch)


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ({"kind": "overload"}, "overload"),
        ({"kind": "rate_limit", "retry_after_s": 1}, 429),
        ({"kind": "server_error", "status": 502}, 502),
        ({"kind": "drop"}, None),
    ],
)
def test_faults_raise_the_sdks_own_errors(
    sdk: Adapter, emulator: Emulator, fault: dict[str, Any], expected: int | str | None
) -> None:
    batch = emulator.create_batch(sdk.dialect, faults=[fault], fault_on="both")
    with pytest.raises(SdkError) as info:
        sdk.retrieve(batch)
    status = (529 if sdk.dialect == "anthropic" else 503) if expected == "overload" else expected
    assert not isinstance(status, str)
    _refuses(sdk, info.value, status)
    _accepts(sdk, sdk.retrieve(batch), batch)  # the fault is used up: the next answer is the batch


@pytest.mark.parametrize(
    ("dialect", "sdk_class"), [("openai", "RateLimitError"), ("anthropic", "EnforcedSpendLimitReachedError")]
)
def test_quota_refusal(emulator: Emulator, dialect: str, sdk_class: str) -> None:
    """The billing stops; the anthropic SDK recognises the emulated spend-limit body as its own error type."""
    sdk = ADAPTERS["anthropic-sdk" if dialect == "anthropic" else "openai-sdk:openai"](emulator, DEFAULT_KEY)
    batch = emulator.create_batch(dialect, faults=[{"kind": "quota"}])
    with pytest.raises(SdkError) as info:
        sdk.cancel(batch)
    _refuses(sdk, info.value, 429, sdk_class)


def test_unauthorized_and_not_found(sdk: Adapter, emulator: Emulator) -> None:
    batch = emulator.create_batch(sdk.dialect)
    wrong = ADAPTERS[sdk.name](emulator, "sk-not-a-key")
    with pytest.raises(SdkError) as info:
        wrong.cancel(batch)
    _refuses(sdk, info.value, sdk.unauthorized_status)
    with pytest.raises(SdkError) as info:
        sdk.retrieve(sdk.absent_id)
    _refuses(sdk, info.value, 404)


@pytest.mark.parametrize("name", ["openai-sdk:AzureOpenAI", "openai-sdk:azure-v1"])
def test_azure_reference_example_shape(emulator: Emulator, name: str) -> None:
    """Microsoft's examples (ISO times, "Cancelling", null counts): the SDK's calls parse them, its types do not."""
    sdk = ADAPTERS[name](emulator, DEFAULT_KEY)
    batch = emulator.create_batch("azure", doc_example_shape=True)
    answer = sdk.cancel(batch)
    assert answer.parsed.status == "Cancelling"
    assert sdk.strict_problems(answer.raw) == _AZURE_EXAMPLE


def _botocore_refuses(error: SdkError) -> None:
    """botocore raised a ``ClientError`` whose code is the emulator's ``x-amzn-ErrorType``: a modeled exception
    class of the Bedrock service model (``ValidationException``…) whenever the model knows that code."""
    import botocore.exceptions
    import botocore.session

    assert issubclass(error.sdk_class, botocore.exceptions.ClientError), error.sdk_class
    code = json.loads(error.body)["__type"]
    modeled = {s.name for s in botocore.session.get_session().get_service_model("bedrock").error_shapes}
    assert error.sdk_class.__name__ == (code if code in modeled else "ClientError"), (error.sdk_class, code)


@pytest.mark.parametrize("scenario", [{}, {"bedrock_finished": "ConflictException"}])
def test_bedrock_refusals_of_a_finished_job_are_modeled_errors(emulator: Emulator, scenario: dict[str, Any]) -> None:
    sdk = ADAPTERS["botocore:bedrock"](emulator, DEFAULT_KEY)
    batch = emulator.create_batch("bedrock", status="completed", **scenario)
    with pytest.raises(SdkError) as info:
        sdk.cancel(batch)
    _refuses(sdk, info.value, 400)
    assert info.value.sdk_class.__name__ == scenario.get("bedrock_finished", "ValidationException")


def test_gemini_sdk_reads_the_states_and_counts_as_its_own(emulator: Emulator) -> None:
    """google-genai rewrites BATCH_STATE_* to its JobState: every state the emulator writes is one it knows."""
    sdk = ADAPTERS["google-genai:gemini"](emulator, DEFAULT_KEY)
    for status, state in (("in_progress", "JOB_STATE_RUNNING"), ("cancelled", "JOB_STATE_CANCELLED")):
        batch = emulator.create_batch("gemini", status=status)
        answer = sdk.retrieve(batch)
        assert answer.parsed.state.value == state
        assert json.loads(answer.raw)["metadata"]["batchStats"]["requestCount"] == "10"


@pytest.mark.parametrize("name", ["google-genai:vertex", "aiplatform:vertex"])
def test_vertex_sdks_read_paused_and_partial_states(emulator: Emulator, name: str) -> None:
    sdk = ADAPTERS[name](emulator, DEFAULT_KEY)
    for state in ("JOB_STATE_PAUSED", "JOB_STATE_PARTIALLY_SUCCEEDED", "JOB_STATE_UPDATING"):
        batch = emulator.create_batch("vertex", status=state)
        answer = sdk.retrieve(batch)
        assert answer.parsed.state.name == state and sdk.strict_problems(answer.raw) == set()


@pytest.mark.filterwarnings("ignore:RUNNING is not a valid JobState")  # google-genai's own warning for the drift
@pytest.mark.parametrize(
    ("name", "drifted", "expected"),
    [
        ("google-genai:vertex", {"state": "CANCELLED", "completionStats": {"successfulCount": 4}}, {"state",
                                                                                                       "completionStats"}),
        ("google-genai:vertex", {"state": "JOB_STATE_RUNNING", "cancelTime": "2026-12-01T00:00:00Z"}, {"cancelTime"}),
        ("aiplatform:vertex", {"state": "JOB_STATE_RUNNING", "cancelTime": "2026-12-01T00:00:00Z"}, {"cancelTime"}),
        ("google-genai:gemini", {"name": "batches/x", "metadata": {"state": "BATCH_STATE_RUNNING",
                                 "batchStats": {"requestCount": 10}}}, {"metadata.batchStats.requestCount"}),
        ("google-genai:gemini", {"name": "batches/x", "metadata": {"state": "RUNNING", "status": "x"}},
         {"metadata.status", "metadata.state"}),
        ("botocore:bedrock", {"jobArn": "a", "modelId": "m", "roleArn": "r", "submitTime": "2026-12-01T00:00:00Z",
                              "inputDataConfig": {}, "outputDataConfig": {}, "status": "Cancelled"}, {"status"}),
        ("botocore:bedrock", {"jobArn": "a", "status": "Stopped", "recordCounts": {}},
         {"recordCounts", "modelId", "roleArn", "submitTime", "inputDataConfig", "outputDataConfig"}),
    ],
)  # fmt: skip
def test_the_strict_checks_catch_drift(
    emulator: Emulator, name: str, drifted: dict[str, Any], expected: set[str]
) -> None:
    """The cloud SDKs accept unknown fields silently; the strict checks above are what would notice drift."""
    sdk = ADAPTERS[name](emulator, DEFAULT_KEY)
    assert sdk.strict_problems(json.dumps(drifted).encode()) == expected
