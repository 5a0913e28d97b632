#!/bin/sh
# The image build without a Docker engine: the same build context, the same two install scripts the
# Dockerfile runs, then the image's entrypoint run the way the container runs it (empty environment,
# read-only install). tests/deploy/test_image.py runs this in CI and checks that the Dockerfile still matches.
# Usage: image-smoke.sh [WORK_DIR]   (PYTHON selects the interpreter, default python3; a 3.11 like the image)
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d)}
mkdir -p "$work"

# The Dockerfile's build stage copies exactly these (tests/deploy/test_image.py compares the two lists).
CONTEXT="pyproject.toml README.md requirements/runtime.txt requirements/build.txt worker"

echo "== build context"
mkdir -p "$work/src"
for path in $CONTEXT; do mkdir -p "$(dirname "$work/src/$path")" && cp -R "$repo/$path" "$work/src/$path"; done
find "$work/src" -name __pycache__ -type d -prune -exec rm -rf {} +

echo "== stage 1: wheels"
sh "$repo/deploy/build-wheels.sh" "$work/src" "$work/wheels"
echo "== stage 2: venv from wheels only"
sh "$repo/deploy/install-wheels.sh" "$work/venv" "$work/wheels"

# The container's read-only root filesystem: nothing may be written into the install at run time.
chmod -R a-w "$work/venv"
trap 'chmod -R u+w "$work/venv"' EXIT

cat >"$work/providers.yaml" <<'YAML'
providers:
  openai:
    dialect: openai
    accounts:
      default: { api_key_env: SMOKE_OPENAI_API_KEY }
      files: { api_key_file: KEYFILE }
YAML
printf 'sk-smoke-file-key\n' >"$work/key"
sed -i "s|KEYFILE|$work/key|" "$work/providers.yaml"

# What the image's ENV and ENTRYPOINT give the process (see Dockerfile).
run() {
  env -i PATH="$work/venv/bin:/usr/bin:/bin" PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/nonexistent \
    BCW_PROVIDERS_FILE="$work/providers.yaml" "$@"
}

echo "== entrypoint --help"
run batch-cancel-worker --help
echo "== entrypoint check-config"
run SMOKE_OPENAI_API_KEY=sk-smoke-not-a-real-key batch-cancel-worker check-config
echo "== entrypoint check-config without the key (must fail with exit 2)"
rc=0
run batch-cancel-worker check-config >/dev/null 2>&1 || rc=$?
if [ "$rc" -ne 2 ]; then
  echo "check-config without the API key exited $rc, expected 2" >&2
  exit 1
fi
echo "== the image holds the worker, not the emulator (a test tool of its own package)"
run python -I -c "import importlib.util as u, sys; sys.exit(u.find_spec('batch_cancel_emulator') is not None or u.find_spec('uvicorn') is not None)"
echo "image smoke OK"
