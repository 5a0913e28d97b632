#!/bin/sh
# Stage 1 of the image, also run by CI (deploy/image-smoke.sh): build the worker's wheel and a wheel for every
# runtime dependency into one folder, so the runtime stage installs offline and needs no compiler.
# Usage: build-wheels.sh SOURCE_DIR WHEEL_DIR   (PYTHON selects the interpreter, default python3)
set -eu
src=${1:?source dir}
out=${2:?wheel dir}
py=${PYTHON:-python3}
"$py" -m pip wheel --disable-pip-version-check --wheel-dir "$out" "$src"
