"""Fixtures for the deployment artefacts: the pinned helm (one build per machine) and a chart renderer."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.renderer import HELM_DIR, HELM_VERSION, Renderer, _build_helm


@pytest.fixture(scope="session")
def helm() -> Path:
    """The pinned helm, built once per machine into the git-ignored .cache/ (minutes cold, then instant)."""
    binary = HELM_DIR / "helm"
    if not binary.exists():
        _build_helm(binary)
    out = subprocess.run([binary, "version", "--short"], capture_output=True, text=True, check=True).stdout
    assert out.startswith(HELM_VERSION), out
    return binary


@pytest.fixture(scope="module")
def chart(helm: Path) -> Iterator[Renderer]:
    with tempfile.TemporaryDirectory() as workdir:
        yield Renderer(helm, Path(workdir))
