# syntax=docker/dockerfile:1
# divconq service image.
#   GPU (default): docker build -t divconq .
#   CPU:           docker build --build-arg VARIANT=cpu -t divconq:cpu .
# The model cache lives on the /data volume, so the embedded model is
# converted once per volume, not once per container.
ARG VARIANT=gpu
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ARG VARIANT
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, from pyproject alone, so code edits reuse this layer.
COPY pyproject.toml README.md ./
RUN mkdir service && touch service/__init__.py \
 && if [ "$VARIANT" = "cpu" ]; then \
      pip install --extra-index-url "$TORCH_CPU_INDEX" ".[cpu]" \
      && pip uninstall -y torchvision torchaudio torchcodec; \
    else \
      pip install ".[gpu]"; \
    fi
COPY service ./service
RUN pip install --no-deps . && python -c "import service.app"

FROM ${PYTHON_IMAGE}
ARG VARIANT
LABEL org.opencontainers.image.title="divconq" \
      org.opencontainers.image.description="Decompose-then-solve LLM inference service (${VARIANT})"
RUN useradd --create-home --uid 10001 app && mkdir /data && chown app:app /data
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DIVCONQ_HOST=0.0.0.0 \
    DIVCONQ_PORT=8000 \
    DIVCONQ_DATA_DIR=/data \
    HF_HOME=/data/hf
VOLUME ["/data"]
USER app
WORKDIR /home/app
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["python", "-m", "service", "serve"]
