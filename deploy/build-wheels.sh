#!/bin/sh
# Stage 1 of the image, also run by CI (deploy/image-smoke.sh): into WHEEL_DIR, the wheel of every runtime
# dependency exactly as uv.lock pins it, the worker's own wheel, the lock they were checked against
# (requirements.txt, so stage 2 checks the hashes again) and the SBOM of that set (sbom.cdx.json, CycloneDX 1.6).
# The runtime stage then installs offline and needs no compiler.
# Usage: build-wheels.sh SOURCE_DIR WHEEL_DIR   (PYTHON selects the interpreter, default python3)
# SOURCE_DIR holds pyproject.toml, README.md, worker/ and requirements/{runtime,build}.txt (the lock's exports).
set -eu
src=${1:?source dir}
out=${2:?wheel dir}
py=${PYTHON:-python3}
lock=$src/requirements/runtime.txt

# The tools run from a venv of their own, installed from the lock too (requirements/build.txt: pip, the build
# backend, the SBOM generator), so neither the interpreter's site-packages nor an unpinned download takes part.
tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
"$py" -m venv "$tools"
pip="$tools/bin/python -m pip --disable-pip-version-check"
$pip install --quiet --require-hashes -r "$src/requirements/build.txt"

# --only-binary: every file is the index's own wheel, so its hash is the one in the lock (a wheel built here from
# an sdist would match no locked hash, and would need a compiler).
$pip wheel --quiet --require-hashes --only-binary :all: --wheel-dir "$out" -r "$lock"
# The worker itself, built by the locked setuptools (no build isolation: nothing fetched); its dependencies are
# the ones above.
$pip wheel --quiet --no-deps --no-build-isolation --wheel-dir "$out" "$src"
cp "$lock" "$out/requirements.txt"

# The SBOM describes the lock's runtime set (names, versions, purls, the locked hashes) with the worker as its
# root component. --output-reproducible: no random serial number or timestamp, so the same lock gives the same
# file. A requirements file carries no dependency graph, which the generator warns about on every run: silenced.
PYTHONWARNINGS=ignore::UserWarning "$tools/bin/cyclonedx-py" requirements --pyproject "$src/pyproject.toml" \
  --spec-version 1.6 --output-format JSON --output-reproducible --output-file "$out/sbom.cdx.json" "$lock"
