#!/bin/sh
# Stage 2 of the image, also run by CI (deploy/image-smoke.sh): a fresh virtualenv holding the worker and its
# dependencies from WHEEL_DIR only (--no-index: nothing is fetched or compiled here). The dependencies are
# installed from the lock build-wheels.sh put beside them, with their hashes checked again; then the worker's
# own wheel, with no dependency resolution of its own.
# Usage: install-wheels.sh VENV_DIR WHEEL_DIR   (PYTHON selects the interpreter, default python3)
set -eu
venv=${1:?venv dir}
wheels=${2:?wheel dir}
py=${PYTHON:-python3}
"$py" -m venv "$venv"
pip="$venv/bin/python -m pip --disable-pip-version-check"
$pip install --no-index --find-links "$wheels" --require-hashes -r "$wheels/requirements.txt"
$pip install --no-index --no-deps "$wheels"/batch_cancel_worker-*.whl
# pip is not needed at run time, and neither is the setuptools a Python < 3.12 venv is seeded with (an old one,
# outside the lock); removing them shrinks the image and its attack surface, and leaves exactly the locked set.
$pip uninstall --yes pip setuptools
"$venv/bin/batch-cancel-worker" --help >/dev/null
