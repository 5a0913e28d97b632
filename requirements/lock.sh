#!/bin/sh
# The one lock is uv.lock at the top of the repository: one resolution for every set the project installs (the
# runtime, each extra, the `build` group), with a hash for every file, for any platform and Python >= 3.11.
# pip cannot read it, so the sets that get installed are exported here as hash-pinned requirements files:
# dev.txt for `make dev`, `make test` and CI; uv.txt, the locked uv alone, which the interpreter's own pip installs
# first to sync dev.txt (the Makefile); runtime.txt and build.txt for the image (deploy/build-wheels.sh, pip only);
# runtime-cloud.txt, the runtime with the [google], [aws] and [azure] extras, for an image that serves Vertex AI,
# Bedrock or Azure OpenAI with Entra ID (the Dockerfile's RUNTIME_SET build argument).
#
#   lock.sh            refresh after a pyproject.toml change: re-resolve what changed, keep every other pin
#   lock.sh --upgrade  the newest versions pyproject.toml allows, for everything (or --upgrade-package NAME)
#   lock.sh --check    exit 1 with one line saying what to run when uv.lock or an export is behind pyproject.toml
#
# --check needs no network: uv compares the requirements recorded in uv.lock with pyproject.toml's.
# UV selects the uv binary (default: the one the dev lock installs in .venv).
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
uv=${UV:-$repo/.venv/bin/uv}
# The lock is universal: it never needs an interpreter of its own, and must never try to download one.
UV_PYTHON_DOWNLOADS=never
export UV_PYTHON_DOWNLOADS
refresh="run \`make lock\` and commit uv.lock and requirements/"

if [ ! -x "$uv" ]; then
  echo "lock.sh: $uv not found (it comes from requirements/dev.txt: run \`make\` first, or set UV)" >&2
  exit 1
fi

# export SET EXTRA_ARGS...: one set of uv.lock as a requirements file on stdout. --frozen reads uv.lock as it is
# (no resolution, no network); the project itself is left out because it is installed from the work tree.
export_set() {
  set_name=$1
  shift
  echo "# The $set_name set of uv.lock, hash-pinned for pip --require-hashes. Do not edit: \`make lock\` writes it."
  "$uv" export --quiet --frozen --no-emit-project --no-default-groups --format requirements.txt "$@"
}

export_all() {
  export_set runtime >"$1/runtime.txt"
  export_set runtime-cloud --extra google --extra aws --extra azure >"$1/runtime-cloud.txt"
  export_set dev --extra dev --group build --group lock >"$1/dev.txt"
  export_set build --only-group build >"$1/build.txt"
  export_set uv --only-group lock >"$1/uv.txt"
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [ "${1:-}" = "--check" ]; then
  if ! "$uv" lock --check --offline --quiet >/dev/null 2>&1; then
    echo "uv.lock does not match pyproject.toml's dependencies: $refresh" >&2
    exit 1
  fi
  export_all "$tmp"
  for set_file in runtime.txt runtime-cloud.txt dev.txt build.txt uv.txt; do
    if ! cmp -s "$tmp/$set_file" "requirements/$set_file"; then
      echo "requirements/$set_file is not the export of uv.lock: $refresh" >&2
      exit 1
    fi
  done
  exit 0
fi

"$uv" lock --quiet "$@"
export_all "$tmp"
# An export is replaced only when it changed: the Makefile reinstalls the venv when dev.txt is newer than it.
for set_file in runtime.txt runtime-cloud.txt dev.txt build.txt uv.txt; do
  cmp -s "$tmp/$set_file" "requirements/$set_file" || cp "$tmp/$set_file" "requirements/$set_file"
done
echo "uv.lock and requirements/*.txt match pyproject.toml; commit any change to them with it"
