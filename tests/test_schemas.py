"""The published contract files agree with the code: no drift, examples behave, AsyncAPI parses.

Each check uses a validator other than pydantic (``jsonschema``; the AsyncAPI project's own JavaScript
parser), because a schema is only useful to a Go or Node publisher if *their* tools read it as we mean it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator, ValidationError  # type: ignore[import-untyped]  # no stubs in dev deps

from worker.contract import (
    CE_TYPE_FINAL,
    CE_TYPE_STATE,
    BatchSnapshot,
    BatchStateEvent,
    CancelCommand,
    DeadLetterReason,
    InvalidCommand,
    LiftCommand,
    Outcome,
    SelectorCommand,
    SelectorEvent,
    dead_letter_headers,
    decode_any,
    event_headers,
    failure_event,
    schemagen,
    state_event,
)
from worker.sweep.runner import SweepReport, final_event

SCHEMAS = schemagen.SCHEMA_DIR
EXAMPLES = SCHEMAS / "examples"
TOOLS = SCHEMAS / "tools"
INDEX: dict[str, dict[str, Any]] = yaml.safe_load((EXAMPLES / "index.yaml").read_text())


def test_committed_schemas_match_the_models() -> None:
    for name, text in schemagen.render().items():
        path = SCHEMAS / name
        assert path.exists(), f"{name} missing: run python -m worker.contract.schemagen"
        assert path.read_text() == text, f"{name} is stale: run python -m worker.contract.schemagen"


def test_schemagen_check_mode_reports_drift(tmp_path: Path) -> None:
    assert schemagen.main([str(tmp_path), "--check"]) == 1
    assert schemagen.main([str(tmp_path)]) == 0
    assert schemagen.main([str(tmp_path), "--check"]) == 0


@pytest.mark.parametrize("name", sorted(schemagen.SCHEMAS))
def test_schemas_are_valid_json_schema_2020_12(name: str) -> None:
    schema = json.loads((SCHEMAS / name).read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


def test_every_example_file_is_indexed() -> None:
    on_disk = {p.relative_to(EXAMPLES).as_posix() for p in EXAMPLES.rglob("*.json")}
    assert on_disk == set(INDEX)


def leaves(errors: Iterator[ValidationError]) -> Iterator[tuple[str, str]]:
    """Every (keyword, JSON Pointer) reported, including those inside anyOf/oneOf branches."""
    for error in errors:
        yield str(error.validator), "".join(f"/{part}" for part in error.absolute_path)
        yield from leaves(iter(error.context or []))


@pytest.mark.parametrize("name", sorted(INDEX))
def test_example_against_its_schema(name: str) -> None:
    entry = INDEX[name]
    schema = json.loads((SCHEMAS / f"{entry['schema']}.schema.json").read_text())
    found = set(leaves(Draft202012Validator(schema).iter_errors(json.loads((EXAMPLES / name).read_text()))))
    if "fails" in entry:
        assert tuple(entry["fails"]) in found, f"expected {entry['fails']}, validator said {sorted(found)}"
    else:
        assert not found


@pytest.mark.parametrize("name", sorted(n for n in INDEX if n.startswith("commands/")))
def test_worker_agrees_with_the_schema_on_command_examples(name: str) -> None:
    value = (EXAMPLES / name).read_bytes()
    if "fails" not in INDEX[name]:
        decoded = decode_any(value, max_bytes=64 * 1024)
        assert type(decoded) is _COMMAND_MODELS[INDEX[name]["schema"]]
        return
    with pytest.raises(InvalidCommand) as info:
        decode_any(value, max_bytes=64 * 1024)
    assert info.value.reason == DeadLetterReason(INDEX[name]["reason"])


def rebuild(event: BatchStateEvent) -> BatchStateEvent:
    """What the worker's constructors make of the same facts; a valid example must be exactly that."""
    assert event.command_id and event.observed_at
    if event.outcome in {Outcome.REJECTED, Outcome.GAVE_UP, Outcome.INVALID}:
        assert event.detail is not None
        return failure_event(
            command_id=event.command_id,
            outcome=event.outcome,
            detail=event.detail,
            provider=event.provider,
            account=event.account,
            batch_id=event.batch_id,
            last_status=event.status,
            observed_at=event.observed_at,
        )
    command = CancelCommand.model_validate(
        {
            "command_id": event.command_id,
            "provider": event.provider,
            "account": event.account,
            "batch_id": event.batch_id,
        }
    )
    snapshot = BatchSnapshot.model_validate(event.model_dump(include=set(BatchSnapshot.model_fields)))
    return state_event(
        command,
        snapshot,
        event.previous_status,
        final=event.final,
        already_terminal=event.already_terminal,
        observed_at=event.observed_at,
    )


_COMMAND_MODELS = {
    "cancel-command": CancelCommand,
    "cancel-command-cloudevent": CancelCommand,
    "selector-command": SelectorCommand,
    "lift-command": LiftCommand,
}


@pytest.mark.parametrize(
    "name", sorted(n for n in INDEX if n.startswith("events/") and "fails" not in INDEX[n] and "selector" not in n)
)
def test_event_examples_are_what_the_worker_emits(name: str) -> None:
    event = BatchStateEvent.model_validate_json((EXAMPLES / name).read_bytes())
    assert rebuild(event) == event


@pytest.mark.parametrize("name", sorted(n for n in INDEX if INDEX[n]["schema"] == "selector-event"))
def test_selector_event_examples_are_what_the_worker_emits(name: str) -> None:
    event = SelectorEvent.model_validate_json((EXAMPLES / name).read_bytes())
    assert event.outcome is not None
    report = SweepReport(
        sweep=event.sweep,
        outcome=event.outcome,
        pages=event.pages,
        listed=event.listed,
        matched=event.matched,
        published=event.children,
        matches=event.matches,
        detail=event.detail,
    )
    command = SelectorCommand.model_validate(
        {**_SELECTOR_FIELDS, "command_id": event.command_id, "provider": event.provider, "account": event.account}
        | ({"dry_run": True} if event.dry_run else {})
    )
    rebuilt = final_event(command, report, event.outcome).model_copy(update={"observed_at": event.observed_at})
    assert rebuilt == event


_SELECTOR_FIELDS = {"kind": "cancel_matching", "reason": "r", "requested_by": "r"}


@pytest.mark.parametrize("name", sorted(n for n in INDEX if n.startswith("events/") and "fails" in INDEX[n]))
def test_bad_event_examples_are_refused_by_the_model_too(name: str) -> None:
    with pytest.raises(ValueError, match="validation error"):
        BatchStateEvent.model_validate_json((EXAMPLES / name).read_bytes())


# --- AsyncAPI -------------------------------------------------------------------------------------------------

ASYNCAPI: dict[str, Any] = yaml.safe_load((SCHEMAS / "asyncapi.yaml").read_text())


def test_asyncapi_header_names_are_the_ones_the_worker_writes() -> None:
    headers = ASYNCAPI["components"]["schemas"]
    event = BatchStateEvent.model_validate_json((EXAMPLES / "events/openai-cancelled-final.json").read_bytes())
    written = {name for name, _ in event_headers(event, source="s", extra=[("traceparent", b""), ("tracestate", b"")])}
    assert written == set(headers["eventHeaders"]["properties"])
    assert set(headers["eventHeaders"]["properties"]["ce_type"]["enum"]) == {CE_TYPE_STATE, CE_TYPE_FINAL}
    dlq = dead_letter_headers([], reason=DeadLetterReason.TOO_LARGE, message="m", topic="t", partition=0, offset=0)
    assert [name for name, _ in dlq] == headers["deadLetterHeaders"]["required"]
    assert headers["deadLetterHeaders"]["properties"]["bcw.dlq.reason"]["enum"] == [r.value for r in DeadLetterReason]


def test_asyncapi_payloads_are_the_generated_schemas() -> None:
    refs = {m["payload"].get("$ref") for m in ASYNCAPI["components"]["messages"].values()}
    assert {f"./{name}" for name in schemagen.SCHEMAS} <= refs


def node_tools() -> tuple[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("node and npm are required to validate schemas/asyncapi.yaml (Node.js 20 or newer)")
    return node, npm


def install_parser(npm: str) -> None:
    """``npm ci`` from the committed lock file, only when node_modules is missing or older than the lock."""
    marker = TOOLS / "node_modules" / ".package-lock.json"
    if marker.exists() and marker.stat().st_mtime >= (TOOLS / "package-lock.json").stat().st_mtime:
        return
    done = subprocess.run(
        [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
        cwd=TOOLS,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"npm ci failed in {TOOLS}:\n{done.stdout}\n{done.stderr}"


def test_asyncapi_document_passes_the_asyncapi_parser() -> None:
    node, npm = node_tools()
    install_parser(npm)
    done = subprocess.run(
        [node, "validate.mjs", str(SCHEMAS / "asyncapi.yaml")],
        cwd=TOOLS,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"@asyncapi/parser rejected asyncapi.yaml:\n{done.stdout}\n{done.stderr}"
    assert "OK:" in done.stdout


def test_asyncapi_validator_does_fail_on_a_broken_document(tmp_path: Path) -> None:
    """Guards the guard: a validator that always says OK would make the test above worthless."""
    node, npm = node_tools()
    install_parser(npm)
    for name in schemagen.SCHEMAS:
        shutil.copy(SCHEMAS / name, tmp_path / name)
    broken = tmp_path / "asyncapi.yaml"
    broken.write_text((SCHEMAS / "asyncapi.yaml").read_text().replace("action: receive", "action: consume"))
    done = subprocess.run(
        [node, "validate.mjs", str(broken)], cwd=TOOLS, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode != 0 and "consumeCommands" in done.stdout
