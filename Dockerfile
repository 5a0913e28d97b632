# syntax=docker/dockerfile:1
# batch-cancel-worker image. Build: docker build -t batch-cancel-worker:0.1.0 --build-arg VERSION=0.1.0 .
# CI builds this file unchanged for both RUNTIME_SETs (buildah; PYTHON_IMAGE a Debian bookworm base made with
# mmdebstrap, as no registry is reachable there) and runs the image against a real broker (tests/deploy/
# container.py, test_image.py). The two RUN steps are deploy/build-wheels.sh and deploy/install-wheels.sh, which
# deploy/image-smoke.sh also runs without any container tool.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- stage 1: wheels for the worker and every dependency exactly as uv.lock pins them, hash-checked (all ship
# manylinux wheels: no compiler needed; a dependency that ever needs one fails here, never in the runtime stage),
# and the SBOM of that set. requirements/ holds the lock's exports (`make lock`).
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY deploy/build-wheels.sh /usr/local/bin/build-wheels.sh
COPY pyproject.toml README.md /src/
# Which export of the lock is the image's runtime: `runtime` (the default, lean) or `runtime-cloud`, the same
# plus the [google], [aws] and [azure] extras that Vertex AI, Bedrock and Entra ID Azure accounts need
# (--build-arg RUNTIME_SET=runtime-cloud; without them such an account stops the worker at start with a message
# naming the extra).
ARG RUNTIME_SET=runtime
COPY requirements/${RUNTIME_SET}.txt /src/requirements/runtime.txt
COPY requirements/build.txt /src/requirements/
COPY worker /src/worker
RUN sh /usr/local/bin/build-wheels.sh /src /wheels

# ---- stage 2: runtime, a venv installed from those wheels only; no compiler, no pip, no build files.
FROM ${PYTHON_IMAGE} AS runtime
# Re-declared: an ARG before the first FROM is visible only in FROM lines, and the base.name label needs it.
ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="batch-cancel-worker" \
      org.opencontainers.image.description="Consumes cancel commands from Kafka, cancels LLM batch jobs at their providers, follows them and publishes batch-state events." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}" \
      batch-cancel-worker.sbom="/usr/share/doc/batch-cancel-worker/sbom.cdx.json"
# The SBOM label is in the project's own namespace: org.opencontainers.image.* keys are reserved to the OCI spec,
# which defines none for an SBOM. The file is the CycloneDX JSON build-wheels.sh wrote from the lock's runtime set.

# A fixed numeric uid/gid so Kubernetes runAsNonRoot can verify it (the Helm chart uses the same 10001).
# The official python image also ships pip, setuptools and wheel with its interpreter, on PATH; the runtime needs
# none of them (the venv holds its own exact set), so they go. A base without pip (Debian's python3) skips this.
RUN groupadd --system --gid 10001 bcw \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin bcw \
 && if python3 -m pip --version >/dev/null 2>&1; then \
      python3 -m pip uninstall --yes --disable-pip-version-check pip setuptools wheel; \
    fi

COPY --from=build /wheels/sbom.cdx.json /usr/share/doc/batch-cancel-worker/sbom.cdx.json
COPY deploy/install-wheels.sh /usr/local/bin/install-wheels.sh
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    sh /usr/local/bin/install-wheels.sh /opt/venv /wheels \
 && rm /usr/local/bin/install-wheels.sh

# Read-only root filesystem: bytecode was compiled at install, nothing is written at run time; mount a
# writable /tmp (emptyDir) if a library ever needs one. The providers file is a mounted ConfigMap.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BCW_PROVIDERS_FILE=/etc/batch-cancel-worker/providers.yaml
USER 10001:10001
# /metrics, /livez, /readyz (BCW_METRICS_PORT).
EXPOSE 9464
# The worker drains on SIGTERM for BCW_SHUTDOWN_GRACE_S, then exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["batch-cancel-worker"]
CMD ["run"]
