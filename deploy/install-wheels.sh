#!/bin/sh
# Stage 2 of the image, also run by CI (deploy/image-smoke.sh): a fresh virtualenv holding the worker and its
# dependencies from WHEEL_DIR only (--no-index: nothing is fetched or compiled here).
# Usage: install-wheels.sh VENV_DIR WHEEL_DIR   (PYTHON selects the interpreter, default python3)
set -eu
venv=${1:?venv dir}
wheels=${2:?wheel dir}
py=${PYTHON:-python3}
"$py" -m venv "$venv"
"$venv/bin/python" -m pip install --disable-pip-version-check --no-index --find-links "$wheels" batch-cancel-worker
# pip is not needed at run time; removing it shrinks the image and its attack surface.
"$venv/bin/python" -m pip uninstall --disable-pip-version-check --yes pip
"$venv/bin/batch-cancel-worker" --help >/dev/null
