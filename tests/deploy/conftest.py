"""Fixtures for the deployment artefacts: the pinned helm (one build per machine), a chart renderer, and the image
built from the Dockerfile once per session for each RUNTIME_SET (tests/deploy/container.py)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from tests.deploy.container import (
    CannotBuild,
    Image,
    ImageFactory,
    build_image,
    ensure_base,
    ensure_tools,
    remove_image,
)
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


def _cannot_build(reason: str) -> NoReturn:
    """Skip, with the reason in one line; in CI fail instead: CI must build and run the image."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must build the image, and this machine cannot: {reason}", pytrace=False)
    pytest.skip(f"cannot build the image here: {reason}")


@pytest.fixture(scope="session")
def image_base() -> str:
    """The base image made from Debian's packages (tools installed and the base built on first use)."""
    try:
        ensure_tools()
    except CannotBuild as exc:
        _cannot_build(str(exc))
    return ensure_base()


IMAGE_FIGURES: dict[str, Image] = {}


@pytest.fixture(scope="session")
def built_image(image_base: str) -> Iterator[ImageFactory]:
    """The Dockerfile built once per session for each RUNTIME_SET asked for; the images are removed at the end."""
    images: dict[str, Image] = {}

    def get(runtime_set: str) -> Image:
        if runtime_set not in images:
            images[runtime_set] = IMAGE_FIGURES[runtime_set] = build_image(runtime_set, image_base)
        return images[runtime_set]

    yield get
    for image in images.values():
        remove_image(image)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The built images' sizes and build times, for the CI log (the issue notes quote them)."""
    for image in IMAGE_FIGURES.values():
        terminalreporter.write_line(
            f"image RUNTIME_SET={image.runtime_set}: {image.size_bytes / 1e6:.0f} MB, "
            f"built in {image.build_seconds:.0f} s (base {image.base})"
        )
