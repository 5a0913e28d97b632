"""Write ``schemas/*.schema.json`` from the contract models: ``python -m worker.contract.schemagen [--check] [DIR]``.

The JSON Schemas are generated, never edited, so they cannot drift from what the worker enforces; the
files are still committed, because publishers in Go or Node read them without running Python.
``--check`` writes nothing and exits 1 if a committed file differs, for CI and the drift test.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from worker.contract import (
    BatchSignal,
    BatchStateEvent,
    CancelCommand,
    CommandCloudEvent,
    FollowState,
    LiftCommand,
    SelectorCommand,
    SelectorEvent,
)

__all__ = ["SCHEMAS", "main", "render"]

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"

#: file name -> (model, mode). Commands are described as the worker *reads* them (defaults optional),
#: events as it *writes* them (every field present).
SCHEMAS: Mapping[str, tuple[type[BaseModel], Literal["validation", "serialization"]]] = {
    "cancel-command.schema.json": (CancelCommand, "validation"),
    "cancel-command-cloudevent.schema.json": (CommandCloudEvent, "validation"),
    "batch-state-event.schema.json": (BatchStateEvent, "serialization"),
    "follow-state.schema.json": (FollowState, "serialization"),
    "selector-command.schema.json": (SelectorCommand, "validation"),
    "lift-command.schema.json": (LiftCommand, "validation"),
    "selector-event.schema.json": (SelectorEvent, "serialization"),
    "batch-signal.schema.json": (BatchSignal, "serialization"),
}


def render() -> dict[str, str]:
    """Every schema file's exact text; stable key order and a final newline keep diffs reviewable."""
    files = {}
    for name, (model, mode) in SCHEMAS.items():
        schema: dict[str, Any] = {"$schema": JSON_SCHEMA_DIALECT, **model.model_json_schema(mode=mode)}
        files[name] = json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.contract.schemagen", description=__doc__.splitlines()[0])
    parser.add_argument("directory", nargs="?", type=Path, default=SCHEMA_DIR)
    parser.add_argument("--check", action="store_true", help="report drift instead of writing")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path: Path = args.directory / name
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(name)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if args.check and stale:
        print(f"out of date (run python -m worker.contract.schemagen): {', '.join(stale)}", file=sys.stderr)
        return 1
    for name in stale if not args.check else ():
        print(f"wrote {args.directory / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
