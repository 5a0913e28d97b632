"""The chart's commented providers example is configuration the worker and the chart's schema accept."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from jsonschema import Draft7Validator  # type: ignore[import-untyped]  # no stubs in dev deps

from worker.config import DIALECTS, ProvidersFile

CHART = Path(__file__).resolve().parents[1] / "helm" / "batch-cancel-worker"


def _values_example() -> dict[str, dict[str, object]]:
    """The ``#   name: …`` lines under ``providers.config`` in values.yaml, uncommented."""
    text = (CHART / "values.yaml").read_text()
    lines = re.findall(r"^    #   (.*)$", text, re.MULTILINE)
    assert lines, "values.yaml lost its commented providers example"
    example = yaml.safe_load("\n".join(lines))
    assert isinstance(example, dict)
    return example


def test_values_example_names_every_new_provider_and_is_valid() -> None:
    example = _values_example()
    assert {"anthropic", "mistral", "azure", "together", "xai", "groq"} <= set(example)
    assert {p["dialect"] for p in example.values()} | {"openai", "siliconflow", "dashscope", "deepinfra"} == set(
        DIALECTS
    )
    ProvidersFile.model_validate({"providers": example})
    schema = json.loads((CHART / "values.schema.json").read_text())
    providers_schema = schema["properties"]["providers"]["properties"]["config"]
    Draft7Validator(providers_schema).validate({"providers": example})
