"""The image built from the Dockerfile as it ships, and run the way a container runtime runs it, with no Docker engine.

What this machine (and CI) can do, measured: no container registry is reachable and ``podman run`` cannot start a
container (the sandbox refuses the resource limits an OCI runtime sets), but buildah with chroot isolation builds
and runs images. So:

- the base image is made from Debian's own packages: ``mmdebstrap --variant=minbase`` with ``python3``,
  ``python3-venv`` and ``ca-certificates`` (bookworm: Python 3.11, like ``python:3.11-slim-bookworm``), written once
  to the git-ignored ``.cache/image/`` and imported with ``podman import``. It differs from the official image in
  where Python lives (``/usr/bin/python3`` from Debian, not ``/usr/local`` built from python.org; the venv's
  ``python3`` links to it either way) and in carrying apt and the minbase set: the Dockerfile relies on neither;
- ``buildah bud --isolation chroot`` builds the Dockerfile unchanged, with only ``PYTHON_IMAGE`` (and
  ``RUNTIME_SET``) given; the host's certificate store is bind-mounted read-only for the build's RUN steps only,
  because package downloads here pass through a TLS proxy only the host trusts (nothing of it lands in the image);
- ``buildah run --isolation chroot`` runs the image's entrypoint with the image's own user, environment and working
  directory (no PID or network namespace: the worker reaches the test broker and the emulator on 127.0.0.1).
  ``buildah run`` does not pass SIGTERM on (it kills its child), so ``stop`` signals the entrypoint process itself
  with the image's STOPSIGNAL, as a container runtime signals a container's first process.

The tools come from Debian's packages (``mmdebstrap``, ``buildah``, ``podman``), installed with apt-get when missing
(their .deb files cached in ``.cache/apt/``), as the broker's jars are fetched on first use. A machine that cannot
have them (no apt-get, not root) cannot build the image: the tests skip with that reason in one line, except in CI
(``CI`` set), where they fail, because CI must build the image.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack.broker import DEFAULT_CACHE
from devstack.worker_process import ChildProcess

REPO = Path(__file__).resolve().parents[2]
CACHE = DEFAULT_CACHE / "image"
APT_CACHE = DEFAULT_CACHE / "apt"

#: Debian package of each tool the image tests run.
TOOLS = {"mmdebstrap": "mmdebstrap", "buildah": "buildah", "podman": "podman"}
SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
#: Where the chart (and any runtime) mounts the providers file: the image's BCW_PROVIDERS_FILE.
PROVIDERS_PATH = "/etc/batch-cancel-worker/providers.yaml"
HOST_CERTS = Path("/etc/ssl/certs")


class CannotBuild(Exception):
    """This machine cannot build images; the message is the one-line reason."""


def _run(args: Sequence[str], *, timeout: float, what: str) -> str:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return proc.stdout


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """One builder at a time per machine (the cache and the image store are shared by worktrees' sessions)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_tools() -> None:
    """Install the Debian packages of missing tools; raise ``CannotBuild`` where that is impossible here."""
    missing = sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise CannotBuild(f"{', '.join(missing)} missing and no apt-get to install them (a Debian machine can)")
    if os.geteuid() != 0:
        raise CannotBuild(f"installing {' '.join(missing)} needs root (apt-get install {' '.join(missing)})")
    (APT_CACHE / "partial").mkdir(parents=True, exist_ok=True)
    install = ["apt-get", "install", "-y", "-q", "-o", f"Dir::Cache::Archives={APT_CACHE}/", *missing]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with _locked("apt"):
        if subprocess.run(install, capture_output=True, env=env, timeout=900, check=False).returncode != 0:
            # A fresh machine's package lists may be stale or absent: refresh once, then it must work.
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, timeout=600, check=False)
            proc = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900, check=False)
            if proc.returncode != 0:
                raise RuntimeError(f"apt-get install {' '.join(missing)} failed:\n{proc.stdout[-2000:]}{proc.stderr}")


def _image_exists(tag: str) -> bool:
    return subprocess.run(["podman", "image", "exists", tag], capture_output=True, check=False).returncode == 0


def ensure_base() -> str:
    """The base image's tag; built from Debian's packages once per machine (the tarball stays in .cache/)."""
    digest = hashlib.sha256(" ".join([SUITE, "minbase", *BASE_PACKAGES]).encode()).hexdigest()[:12]
    tag = f"localhost/bcw-python-base:{SUITE}-{digest}"
    with _locked("base"):
        if _image_exists(tag):
            return tag
        tarball = CACHE / f"python-base-{SUITE}-{digest}.tar"
        if not tarball.exists():
            partial = tarball.with_suffix(".partial.tar")
            include = ",".join(BASE_PACKAGES)
            _run(
                ["mmdebstrap", "--quiet", "--variant=minbase", f"--include={include}", SUITE, str(partial)],
                timeout=900,
                what="mmdebstrap",
            )
            os.replace(partial, tarball)
        _run(["podman", "import", "--quiet", str(tarball), tag], timeout=300, what="podman import")
    return tag


@dataclass(frozen=True)
class Image:
    """A built image: its tag, the build arguments that differed, how long the build took, and its config."""

    tag: str
    runtime_set: str
    base: str
    build_seconds: float
    size_bytes: int
    config: dict[str, Any]

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.config.get("Labels") or {})


#: A session fixture's builder: the image of a RUNTIME_SET, built on first ask.
ImageFactory = Callable[[str], Image]


def build_image(runtime_set: str, base: str) -> Image:
    """``buildah bud`` of the repository's Dockerfile, unchanged, with PYTHON_IMAGE and RUNTIME_SET set."""
    tag = f"localhost/batch-cancel-worker:test-{runtime_set}-{uuid.uuid4().hex[:8]}"
    args = ["buildah", "bud", "--quiet", "--isolation", "chroot", "--pull=never"]
    if HOST_CERTS.is_dir():
        args += ["--volume", f"{HOST_CERTS}:{HOST_CERTS}:ro"]
    args += ["--build-arg", f"PYTHON_IMAGE={base}", "--build-arg", f"RUNTIME_SET={runtime_set}"]
    args += ["--tag", tag, "--file", str(REPO / "Dockerfile"), str(REPO)]
    started = time.monotonic()
    _run(args, timeout=1200, what=f"buildah bud (RUNTIME_SET={runtime_set})")
    seconds = time.monotonic() - started
    inspect = json.loads(_run(["podman", "image", "inspect", tag], timeout=60, what="podman image inspect"))[0]
    oci = json.loads(_run(["buildah", "inspect", "--type", "image", tag], timeout=60, what="buildah inspect"))
    return Image(tag, runtime_set, base, seconds, int(inspect["Size"]), dict(oci["OCIv1"]["config"]))


def remove_image(image: Image) -> None:
    subprocess.run(["buildah", "rmi", "--force", image.tag], capture_output=True, timeout=120, check=False)


class Container:
    """One working container of an image (``buildah from``); each ``run`` is a process in it."""

    def __init__(self, image: Image) -> None:
        self.image = image
        self.name = f"bcw-test-{uuid.uuid4().hex[:10]}"
        _run(["buildah", "from", "--pull=never", "--name", self.name, image.tag], timeout=120, what="buildah from")

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def remove(self) -> None:
        subprocess.run(["buildah", "rm", self.name], capture_output=True, timeout=120, check=False)

    def argv(
        self,
        args: Sequence[str] | None = None,
        *,
        env: Mapping[str, str] = {},
        volumes: Mapping[Path, str] = {},
        entrypoint: Sequence[str] | None = None,
        user: str | None = None,
    ) -> list[str]:
        """The ``buildah run`` line for the image's entrypoint with ``args`` (its CMD when None): the image's user
        (unless ``user`` overrides it, as a pod's runAsUser does), environment and working directory apply; ``env``
        adds to them, ``volumes`` are read-only bind mounts."""
        config = self.image.config
        user = user or config.get("User") or "0:0"
        workdir = config.get("WorkingDir") or "/"
        line = ["buildah", "run", "--isolation", "chroot", "--user", user, "--workingdir", workdir]
        for name, value in env.items():
            line += ["--env", f"{name}={value}"]
        for host, target in volumes.items():
            line += ["--volume", f"{host}:{target}:ro"]
        command = list(config.get("Entrypoint") or []) if entrypoint is None else list(entrypoint)
        command += list(config.get("Cmd") or []) if args is None else list(args)
        return [*line, self.name, "--", *command]

    def run(
        self, args: Sequence[str] | None = None, *, timeout: float = 120, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(args, **kw), capture_output=True, text=True, timeout=timeout, check=False)

    def spawn(self, log_path: Path, args: Sequence[str] | None = None, **kw: Any) -> ContainerProcess:
        process = ContainerProcess(self, self.argv(args, **kw), log_path)
        process.spawn()
        return process

    def changes(self) -> list[str]:
        """What the container's processes changed in its root filesystem (``podman diff``): what a read-only root
        filesystem would have refused."""
        out = _run(["podman", "diff", self.name], timeout=60, what="podman diff")
        return [line for line in out.splitlines() if line.strip()]

    @contextlib.contextmanager
    def mounted(self) -> Iterator[Path]:
        """The container's root filesystem on the host, for reading."""
        root = Path(_run(["buildah", "mount", self.name], timeout=60, what="buildah mount").strip())
        try:
            yield root
        finally:
            subprocess.run(["buildah", "umount", self.name], capture_output=True, timeout=60, check=False)


def _children(pid: int) -> list[int]:
    """Every thread's children: buildah's helpers are Go programs, which fork from any of their threads."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


class ContainerProcess(ChildProcess):
    """A ``buildah run`` child; ``entrypoint_pid`` is the image's entrypoint process inside it."""

    def __init__(self, container: Container, argv: list[str], log_path: Path) -> None:
        super().__init__(argv, os.environ, log_path, name=container.name)
        self.container = container

    def entrypoint_pid(self, timeout: float = 30.0) -> int:
        """The process running the entrypoint: the descendant of ``buildah run`` whose argv is the entrypoint's."""
        entry = (self.container.image.config.get("Entrypoint") or [""])[0]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stack = [self.pid]
            while stack:
                pid = stack.pop()
                try:
                    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                # The interpreter running the console script (argv[1]), not buildah's own helpers around it.
                runs_entry = any(Path(a.decode(errors="replace")).name == entry for a in argv[:2])
                if pid != self.pid and runs_entry and b"buildah" not in argv[0]:
                    return pid
                stack += _children(pid)
            time.sleep(0.1)
        raise RuntimeError(f"no process running {entry!r} under buildah run {self.pid}:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL the whole tree: killing ``buildah run`` alone leaves its chroot helper and the entrypoint running
        (they are not in its process group, and a killed parent does not take them along)."""
        if self.proc is not None and self.proc.poll() is None:
            tree: list[int] = []
            stack = [self.pid]
            while stack:
                pid = stack.pop()
                tree.append(pid)
                stack += _children(pid)
            for pid in reversed(tree):  # the entrypoint first, buildah run last
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        super().kill()

    def stop_signal(self) -> signal.Signals:
        return signal.Signals[str(self.container.image.config.get("StopSignal") or "SIGTERM")]

    def signal_entrypoint(self) -> None:
        os.kill(self.entrypoint_pid(), self.stop_signal())
