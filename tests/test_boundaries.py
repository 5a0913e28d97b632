"""What the running worker may import: never the provider emulator, never the publisher client.

The emulator is a test tool (users' own tests may want it) and the publisher client and ``batch-cancel`` CLI
serve publishers and operators; the worker's runtime depends on neither, so neither can change what a
deployed worker does. Checked twice: statically (every import in the runtime's modules, lazy ones included)
and by loading the runtime's entry points in a fresh interpreter.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "worker"
EMULATOR = ("batch_cancel_emulator",)
PUBLISHER = ("worker.publisher",)
#: The publisher side and the emulator are the only modules that may import the publisher side.
PUBLISHER_MODULES = {p.relative_to(PACKAGE).as_posix() for p in (PACKAGE / "publisher").rglob("*.py")}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            assert node.level == 0, f"{path}: relative import; the package uses absolute ones"
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def _within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def _runtime_modules() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).as_posix() not in PUBLISHER_MODULES]


def test_no_runtime_module_imports_the_emulator_or_the_publisher_side_even_lazily() -> None:
    modules = _runtime_modules()
    assert len(modules) > 30 and PACKAGE / "app.py" in modules  # the scan sees the runtime
    leaks = {
        str(p.relative_to(ROOT)): sorted(n for n in _imports(p) if _within(n, EMULATOR + PUBLISHER)) for p in modules
    }
    assert {k: v for k, v in leaks.items() if v} == {}


def test_the_publisher_side_does_not_import_the_emulator() -> None:
    for name in PUBLISHER_MODULES:
        assert not any(_within(n, EMULATOR) for n in _imports(PACKAGE / name)), name


def test_starting_the_worker_loads_neither_the_emulator_nor_its_server() -> None:
    code = "import sys, worker.cli, worker.app; print('\\n'.join(sorted(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    modules = loaded.stdout.split()
    assert "worker.app" in modules and "worker.kafka.consumer" in modules
    assert [m for m in modules if _within(m, (*EMULATOR, *PUBLISHER, "uvicorn"))] == []


#: Dependencies point one way (docs/architecture.md): what handles commands never reaches down into the Kafka
#: plumbing, the HTTP stack or the wiring; the contract knows none of them.
LAYERS = {
    "contract": (
        "worker.kafka",
        "worker.providers",
        "worker.dispatch",
        "worker.follow",
        "worker.sweep",
        "worker.app",
        "aiokafka",
        "httpx",
    ),
    "follow": (
        "worker.kafka",
        "worker.providers",
        "worker.dispatch",
        "worker.sweep",
        "worker.app",
        "aiokafka",
        "httpx",
    ),
    # Sweeps list through a provider client and publish through small protocols: no Kafka, no HTTP of their own.
    "sweep": ("worker.kafka", "worker.dispatch", "worker.follow", "worker.app", "aiokafka", "httpx"),
    "budget.py": ("worker.kafka", "worker.providers", "worker.dispatch", "worker.follow", "aiokafka", "httpx"),
    "dispatch.py": ("worker.kafka", "worker.providers", "worker.sweep", "worker.app", "aiokafka", "httpx"),
    "providers": ("worker.kafka", "worker.dispatch", "worker.follow", "worker.sweep", "worker.app", "aiokafka"),
    "kafka": ("worker.dispatch", "worker.follow", "worker.providers", "worker.sweep", "worker.app", "httpx"),
    "telemetry": ("worker.kafka", "worker.providers", "worker.dispatch", "worker.follow", "worker.app", "aiokafka"),
    # The receiver's parts verify and read deliveries and hand signals to a sink: no Kafka, no provider calls.
    "webhooks": (
        "worker.kafka",
        "worker.providers",
        "worker.dispatch",
        "worker.follow",
        "worker.sweep",
        "worker.app",
        "aiokafka",
        "httpx",
    ),
    "publisher": ("worker.providers", "worker.dispatch", "worker.follow", "worker.app", "worker.telemetry", "httpx"),
}


def test_dependencies_point_one_way() -> None:
    wrong: dict[str, list[str]] = {}
    for place, forbidden in LAYERS.items():
        target = PACKAGE / place
        files = sorted(target.rglob("*.py")) if target.is_dir() else [target]
        assert files, place
        for path in files:
            bad = sorted(n for n in _imports(path) if _within(n, forbidden))
            if bad:
                wrong[str(path.relative_to(ROOT))] = bad
    assert wrong == {}


def test_the_emulator_uses_only_the_public_contract_of_the_worker() -> None:
    """It is its own package so users' tests can import it; what it takes from the worker is the contract."""
    emulator = ROOT / "batch_cancel_emulator"
    paths = sorted(emulator.rglob("*.py"))
    assert len(paths) > 5
    used = {n for p in paths for n in _imports(p) if _within(n, ("worker",))}
    assert used and all(_within(n, ("worker.contract",)) for n in used), sorted(used)
