"""The lock: uv.lock, its exports in requirements/, and the check `make test` runs before anything else.

Everything the project installs comes from these files with hash checking (`make dev`/`make test`/CI from
``requirements/dev.txt``, the image from ``runtime.txt`` and ``build.txt``), so the tests hold each export
against uv.lock read independently (tests/support/lock.py), and prove that ``requirements/lock.sh --check``
both passes here and fails, with one line naming ``make lock``, on the drift it exists to catch.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.support.lock import EXPORTS, REPO, Lock, normalize, read_export

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
UV = Path(sys.executable).parent / "uv"
LOCK_SH = EXPORTS / "lock.sh"

# Each export and the selection of uv.lock it must hold (requirements/lock.sh's `uv export` flags).
SETS: dict[str, Callable[[Lock], set[tuple[str, str]]]] = {
    "runtime.txt": lambda lock: lock.closure(),
    "runtime-cloud.txt": lambda lock: lock.closure(extras=["google", "aws", "azure"]),
    "dev.txt": lambda lock: lock.closure(extras=["dev"], groups=["build", "lock"]),
    "build.txt": lambda lock: lock.closure(runtime=False, groups=["build"]),
    "uv.txt": lambda lock: lock.closure(runtime=False, groups=["lock"]),
}


@pytest.fixture(scope="module")
def lock() -> Lock:
    return Lock()


@pytest.mark.parametrize("export", sorted(SETS))
def test_export_is_its_set_of_the_lock_with_the_locks_hashes(lock: Lock, export: str) -> None:
    pins = read_export(EXPORTS / export)
    assert [(p.name, p.version) for p in pins] == sorted({(p.name, p.version) for p in pins}), "duplicates"
    expected = SETS[export](lock)
    assert {(p.name, p.version) for p in pins} == expected
    for pin in pins:
        locked = lock.packages[(pin.name, pin.version)].hashes
        assert pin.hashes and pin.hashes <= locked, f"{export}: {pin.name} has hashes uv.lock does not"


def test_sets_agree_where_they_overlap() -> None:
    """One resolution: the runtime and the image's build tools are installed in dev at the very same pins (a
    marker may differ: a package one set needs only on old Pythons, another may need everywhere)."""
    dev = {p.name: (p.version, p.hashes) for p in read_export(EXPORTS / "dev.txt")}
    for export in ("runtime.txt", "runtime-cloud.txt", "build.txt", "uv.txt"):
        for pin in read_export(EXPORTS / export):
            assert dev[pin.name] == (pin.version, pin.hashes), f"{export} and dev.txt disagree on {pin.name}"


def test_runtime_set_is_the_projects_dependencies(lock: Lock) -> None:
    """The image gets the declared dependencies and none of the dev tooling."""
    names = {p.name for p in read_export(EXPORTS / "runtime.txt")}
    declared = {normalize(Requirement(req).name) for req in PYPROJECT["project"]["dependencies"]}
    assert declared <= names
    for tool in ("pytest", "mypy", "ruff", "uv", "pip", "setuptools", "cyclonedx-bom"):
        assert tool not in names


def test_build_group_pins_the_build_backend() -> None:
    """The dev venv and the image build the project without build isolation, i.e. with the `build` group's
    setuptools: it must satisfy exactly what build-system.requires asks, or that build would differ from pip's
    isolated one."""
    group = set(PYPROJECT["dependency-groups"]["build"])
    assert set(PYPROJECT["build-system"]["requires"]) <= group


def _run_lock_sh(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # The copy has no .venv: point the script at this venv's uv, and uv at this interpreter.
    env = {**os.environ, "UV": str(UV), "UV_PYTHON": sys.executable}
    return subprocess.run(
        ["sh", str(repo / "requirements" / "lock.sh"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """What lock.sh reads, copied, so a test can break it."""
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy(REPO / name, tmp_path / name)
    shutil.copytree(EXPORTS, tmp_path / "requirements")
    return tmp_path


def test_lock_check_passes_on_this_checkout() -> None:
    done = _run_lock_sh(REPO, "--check")
    assert done.returncode == 0, done.stderr


def _add_dependency(pyproject: Path, after: str, requirement: str) -> None:
    text = pyproject.read_text()
    assert after in text
    pyproject.write_text(text.replace(after, f'{after}\n    "{requirement}",', 1))


@pytest.mark.parametrize(
    ("after", "requirement"),
    [
        ('"pyyaml>=6.0",', "idna>=3"),  # a runtime dependency
        ('"ruff>=0.17",', "six>=1.16"),  # a dev one, as a new provider's SDK would be
    ],
)
def test_lock_check_fails_in_one_line_when_pyproject_changes(checkout: Path, after: str, requirement: str) -> None:
    assert _run_lock_sh(checkout, "--check").returncode == 0, "the copy itself must pass first"
    _add_dependency(checkout / "pyproject.toml", after, requirement)
    done = _run_lock_sh(checkout, "--check")
    assert done.returncode == 1
    assert done.stdout == ""
    (line,) = done.stderr.strip().splitlines()
    assert "uv.lock" in line and "pyproject.toml" in line and "`make lock`" in line


def test_lock_check_fails_when_an_export_is_edited_by_hand(checkout: Path) -> None:
    runtime = checkout / "requirements" / "runtime.txt"
    lines = runtime.read_text().splitlines(keepends=True)
    first_hash = next(i for i, line in enumerate(lines) if "--hash=" in line)
    runtime.write_text("".join(lines[:first_hash] + lines[first_hash + 1 :]))  # one hash fewer, still valid
    done = _run_lock_sh(checkout, "--check")
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("requirements/runtime.txt is not the export of uv.lock") and "`make lock`" in line


def test_make_lock_refreshes_what_changed_and_keeps_every_other_pin(checkout: Path) -> None:
    """`make lock` (lock.sh without arguments) after a new dependency: the check passes again, the new
    package is in the runtime export, and nothing else moved. Resolving needs the package index."""
    before = read_export(checkout / "requirements" / "dev.txt")
    _add_dependency(checkout / "pyproject.toml", '"pyyaml>=6.0",', "idna>=3")  # already locked, via httpx
    done = _run_lock_sh(checkout)
    assert done.returncode == 0, done.stderr
    assert _run_lock_sh(checkout, "--check").returncode == 0
    assert read_export(checkout / "requirements" / "dev.txt") == before
    text = (checkout / "uv.lock").read_text()
    assert text != (REPO / "uv.lock").read_text()  # the project's recorded requirements now name idna
    root = tomllib.loads(text)["package"]
    (project,) = [p for p in root if p["name"] == "batch-cancel-worker"]
    assert {"name": "idna"} in project["dependencies"]
