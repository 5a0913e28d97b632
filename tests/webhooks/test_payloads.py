"""What each provider's delivery says, read from its own shape."""

from __future__ import annotations

import pytest

from tests.webhooks.signed import bedrock_body, gemini_body, openai_body
from worker.webhooks.payloads import Malformed, parse


def test_each_dialects_batch_id_is_the_one_commands_carry() -> None:
    assert parse("openai", openai_body("batch_1")).batch_id == "batch_1"  # type: ignore[union-attr]
    assert parse("gemini", gemini_body("batches/xyz")).batch_id == "xyz"  # type: ignore[union-attr]
    change = parse("bedrock", bedrock_body("job9", "Completed"))
    assert change is not None and (change.batch_id, change.event) == ("job9", "Completed")
    assert change.delivery_id  # EventBridge's event id: the headers carry none


def test_bedrocks_own_sample_time_is_not_iso_and_is_left_out_not_refused() -> None:
    change = parse("bedrock", bedrock_body(time="Wed Aug 28 22:58:30 UTC 2024"))
    assert change is not None and change.occurred_at is None


@pytest.mark.parametrize(
    ("dialect", "body"),
    [
        ("openai", b"[1, 2]"),
        ("openai", b'{"type": 5}'),
        ("gemini", b'{"type": "batch.failed", "data": {}}'),
        ("bedrock", bedrock_body(detail={"status": "Stopped"})),
        ("bedrock", bedrock_body(id="")),
    ],
)
def test_a_verified_body_in_another_shape_is_malformed(dialect: str, body: bytes) -> None:
    with pytest.raises(Malformed):
        parse(dialect, body)
