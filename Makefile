# The two commands README promises: `make dev` (local stack) and `make test` (the whole check).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: dev test lint typecheck pytest reliability bench clean lock lock-check

# The venv holds exactly the locked dev set, every file checked against its hash: pip (the one bundled with
# $(PYTHON)) installs the locked uv, which syncs requirements/dev.txt (exported from uv.lock; it also removes what
# the lock no longer has); then the project itself, editable, without dependencies and with the locked setuptools
# (no build isolation), so nothing unlocked is ever downloaded.
$(STAMP): pyproject.toml requirements/dev.txt requirements/uv.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --require-hashes -r requirements/uv.txt
	$(BIN)/uv pip sync -q --python $(BIN)/python --require-hashes requirements/dev.txt
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps --no-build-isolation -e .
	touch $(STAMP)

dev: $(STAMP)
	$(BIN)/python -m devstack

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/python -m pytest

test: lock-check lint typecheck pytest

reliability: $(STAMP)
	$(BIN)/python -m pytest -m slow tests/reliability

bench: $(STAMP)
	$(BIN)/python -m bench

# After changing dependencies in pyproject.toml: re-resolve what changed and re-export requirements/ (needs the
# index). `make lock UPGRADE=1` moves every pin to the newest version pyproject.toml allows.
lock: $(STAMP)
	sh requirements/lock.sh $(if $(UPGRADE),--upgrade)

# Offline: fails with one line naming `make lock` when uv.lock or requirements/ is behind pyproject.toml.
lock-check: $(STAMP)
	@sh requirements/lock.sh --check

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
