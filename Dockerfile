# syntax=docker/dockerfile:1
#
# Thresher images, one Dockerfile, three targets:
#
#   docker build --target operator -t thresher-operator .   # kopf operator
#   docker build --target jobs     -t thresher-jobs .       # TMDB + drone (CPU) payloads
#   docker build --target jobs-gpu -t thresher-jobs-gpu .   # drone payload with torch on CUDA
#
# Every image runs as the non-root user 10001 (the chart's restricted Pod
# Security context expects it), has `thresher` as entrypoint, and carries no
# compiler: the builder stage makes Thresher's own (pure-Python) wheel and the
# final stages install only binary wheels (--only-binary=:all:).
# Linted by hadolint in tests/unit/chart/test_dockerfile.py.

ARG BASE_IMAGE=python:3.11-slim
# A CUDA *runtime* image (no toolkit): torch's wheels bring their own CUDA
# libraries, the image provides the driver-facing runtime and a known Ubuntu.
ARG GPU_BASE_IMAGE=nvidia/cuda:12.6.3-runtime-ubuntu24.04

# ---------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/thresher \
    PATH=/opt/thresher/bin:$PATH
RUN groupadd --system --gid 10001 thresher \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/thresher --create-home \
      --shell /usr/sbin/nologin thresher \
 && python -m venv /opt/thresher
WORKDIR /home/thresher

# ---------------------------------------------------------------------------
FROM base AS builder
WORKDIR /src
# Only what the wheel needs; .dockerignore keeps the rest of the repo out, thresher/demo
# included: the demo and its fakes (fake TMDB server, sample fields) run on the host, so no
# image carries them (and setup.py, which only adds the demo's files, is not needed here).
COPY pyproject.toml README* LICENSE* ./
COPY thresher ./thresher
RUN pip wheel --no-deps --wheel-dir /wheels .

# ---------------------------------------------------------------------------
FROM base AS operator
COPY --from=builder /wheels /wheels
# The wheel's file name carries the version; a glob cannot take "[extra]" directly.
# DL3013: a local wheel file; dependency ranges come from pyproject.toml.
# hadolint ignore=DL3013
RUN whl="$(echo /wheels/thresher-*.whl)" \
 && pip install --only-binary=:all: "${whl}[operator]" \
 && rm -rf /wheels
LABEL org.opencontainers.image.title="thresher-operator" \
      org.opencontainers.image.description="Thresher CollectionSchedule operator (kopf)" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 10001:10001
EXPOSE 9090 8080
ENTRYPOINT ["thresher"]
CMD ["operator", "run", "--metrics-port", "9090", "--liveness-port", "8080", "--all-namespaces"]

# ---------------------------------------------------------------------------
FROM base AS jobs
COPY --from=builder /wheels /wheels
# DL3013: a local wheel file; dependency ranges come from pyproject.toml.
# hadolint ignore=DL3013
RUN whl="$(echo /wheels/thresher-*.whl)" \
 && pip install --only-binary=:all: "${whl}[jobs]" \
 && rm -rf /wheels
LABEL org.opencontainers.image.title="thresher-jobs" \
      org.opencontainers.image.description="Thresher job payloads: TMDB collector, drone crop-health (CPU)" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 10001:10001
ENTRYPOINT ["thresher"]
CMD ["job", "--help"]

# ---------------------------------------------------------------------------
FROM ${GPU_BASE_IMAGE} AS jobs-gpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/thresher \
    PATH=/opt/thresher/bin:$PATH \
    DEBIAN_FRONTEND=noninteractive
# Ubuntu 24.04's python3 is 3.12 (Thresher needs >= 3.11); the versions
# follow the pinned base image, so apt pins would only go stale.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && (userdel --remove ubuntu 2>/dev/null || true) \
 && groupadd --system --gid 10001 thresher \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/thresher --create-home \
      --shell /usr/sbin/nologin thresher \
 && python3 -m venv /opt/thresher
WORKDIR /home/thresher
COPY --from=builder /wheels /wheels
# DL3013: a local wheel file; dependency ranges come from pyproject.toml.
# hadolint ignore=DL3013
RUN whl="$(echo /wheels/thresher-*.whl)" \
 && pip install --only-binary=:all: "${whl}[jobs,gpu]" \
 && rm -rf /wheels
LABEL org.opencontainers.image.title="thresher-jobs-gpu" \
      org.opencontainers.image.description="Thresher job payloads with the CUDA (torch) path of the drone processor" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 10001:10001
ENTRYPOINT ["thresher"]
CMD ["job", "--help"]
