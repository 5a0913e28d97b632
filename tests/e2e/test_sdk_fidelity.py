"""The emulator against the providers' official SDKs: every answer of every scenario, parsed by the SDK itself.

If the emulator drifted from what real clients accept, the worker's end-to-end tests would prove nothing, so
each SDK's public cancel/retrieve calls are pointed at it (over real HTTP) and must accept each 200 into the
SDK's own models, validated strictly against the SDK's types too, and must raise the SDK's own exception for
each refusal. Where a provider's documentation shows an answer the SDK's types do not allow (SiliconFlow's
``in_queue``, Together's ``CANCELING``, Azure's reference examples), the allowed deviation is listed here with
its source, field by field; any other deviation fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.sdk_adapters import ADAPTERS, STAINLESS_ERRORS, Adapter, SdkError, anthropic_error_problems
from worker.emulator.testing import DEFAULT_KEY, Emulator

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
    _refuses(sdk, info.value, 401)
    with pytest.raises(SdkError) as info:
        sdk.retrieve("batch_nobody_made")
    _refuses(sdk, info.value, 404)


@pytest.mark.parametrize("name", ["openai-sdk:AzureOpenAI", "openai-sdk:azure-v1"])
def test_azure_reference_example_shape(emulator: Emulator, name: str) -> None:
    """Microsoft's examples (ISO times, "Cancelling", null counts): the SDK's calls parse them, its types do not."""
    sdk = ADAPTERS[name](emulator, DEFAULT_KEY)
    batch = emulator.create_batch("azure", doc_example_shape=True)
    answer = sdk.cancel(batch)
    assert answer.parsed.status == "Cancelling"
    assert sdk.strict_problems(answer.raw) == _AZURE_EXAMPLE
