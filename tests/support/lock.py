"""Reading the lock two ways, so tests can hold the exports and the SBOM against uv.lock itself.

``uv.lock`` is TOML; each set's closure is walked here from the project's own entry, independently of
``uv export``, which wrote ``requirements/*.txt``. A set is compared universally (every fork of a package and
every marker kept), which is what the exports hold too: pip evaluates their markers at install time.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
UV_LOCK = REPO / "uv.lock"
EXPORTS = REPO / "requirements"
PROJECT = "batch-cancel-worker"

# One requirement of an export after continuation lines are joined: name==version, an optional marker, hashes.
_PIN = re.compile(
    r"^(?P<name>[A-Za-z0-9._-]+)==(?P<version>\S+?)(?:\s*;\s*(?P<marker>.+?))?(?P<hashes>(?:\s+--hash=\S+)+)$"
)


def normalize(name: str) -> str:
    """PEP 503 name, the form uv.lock uses: the same package is spelled `PyYAML`, `pyyaml` or `py_yaml`."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    marker: str | None
    hashes: frozenset[str]  # "sha256:<hex>"


def read_export(path: Path) -> list[Pin]:
    """Every requirement of a hash-pinned requirements file; anything else on a line fails loudly."""
    text = path.read_text().replace("\\\n", " ")
    pins = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip() if raw.lstrip().startswith("#") else raw.strip()
        if not line:
            continue
        match = _PIN.match(line)
        assert match, f"{path.name}: not a hash-pinned requirement: {line[:120]}"
        hashes = frozenset(h.removeprefix("--hash=") for h in match["hashes"].split())
        pins.append(Pin(normalize(match["name"]), match["version"], match["marker"], hashes))
    return pins


@dataclass(frozen=True)
class LockedPackage:
    name: str
    version: str
    hashes: frozenset[str]  # the sdist's and every wheel's
    entry: dict[str, Any]


class Lock:
    """uv.lock's packages, and the closure of any selection of the project's dependency sets."""

    def __init__(self, path: Path = UV_LOCK) -> None:
        self.data = tomllib.loads(path.read_text())
        self.packages: dict[tuple[str, str], LockedPackage] = {}
        self._versions: dict[str, list[str]] = {}
        for entry in self.data["package"]:
            files = [entry["sdist"]] if "sdist" in entry else []
            files += entry.get("wheels", [])
            package = LockedPackage(entry["name"], entry["version"], frozenset(f["hash"] for f in files), entry)
            self.packages[(package.name, package.version)] = package
            self._versions.setdefault(package.name, []).append(package.version)
        (self.root,) = [p for p in self.packages.values() if p.name == PROJECT]

    def _resolve(self, dep: dict[str, Any]) -> LockedPackage:
        # A dependency names its version only when the lock holds several (a fork by Python version, say).
        versions = [dep["version"]] if "version" in dep else self._versions[dep["name"]]
        assert len(versions) == 1, f"{dep['name']}: several locked versions and the dependency names none"
        return self.packages[(dep["name"], versions[0])]

    def closure(
        self, *, runtime: bool = True, extras: Iterable[str] = (), groups: Iterable[str] = ()
    ) -> set[tuple[str, str]]:
        """(name, version) of every package the selection installs, the project itself left out.

        ``runtime=False`` with groups is ``uv export --only-group``: the groups alone, not the project's
        dependencies.
        """
        root = self.root.entry
        start: list[dict[str, Any]] = list(root.get("dependencies", [])) if runtime else []
        for name in extras:
            start += root["optional-dependencies"][name]
        for group in groups:
            start += root["dev-dependencies"][group]
        seen: set[tuple[str, str, str | None]] = set()
        stack = list(self._edges(start))
        while stack:
            package, extra = stack.pop()
            key = (package.name, package.version, extra)
            if key in seen:
                continue
            seen.add(key)
            deps = (
                package.entry.get("dependencies", [])
                if extra is None
                else package.entry["optional-dependencies"][extra]
            )
            stack += self._edges(deps)
        return {(name, version) for name, version, _ in seen if name != PROJECT}

    def _edges(self, deps: Iterable[dict[str, Any]]) -> Iterator[tuple[LockedPackage, str | None]]:
        for dep in deps:
            package = self._resolve(dep)
            yield package, None
            for extra in dep.get("extra", []):
                yield package, extra
