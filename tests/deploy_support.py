"""Shared helpers for the deployment checks (tests/test_deploy_*.py).

Not a test module: the repository root, running a command or failing when
its tool is missing, YAML and pyproject loading, and every environment
variable a setting is read from (SETTING_ENV_NAMES), used by
test_deploy_compose.py, test_deploy_docker.py and test_deploy_k8s.py.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from service.core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def run(cmd: list[str], *, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def tool(name: str) -> str:
    """A command from the venv (dev extra) or PATH; a missing one fails the test."""
    venv_bin = Path(sys.executable).parent / name
    if venv_bin.is_file():
        return str(venv_bin)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: `make install` installs it")
    return found


def _setting_env_names(
    model: type[BaseModel] = Settings, prefix: str = "DIVCONQ_"
) -> dict[str, tuple[type[BaseModel], str]]:
    """Every environment variable a setting is read from -> (model, field)."""
    names: dict[str, tuple[type[BaseModel], str]] = {}
    for field_name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names.update(_setting_env_names(annotation, f"{prefix}{field_name.upper()}__"))
        else:
            names[f"{prefix}{field_name.upper()}"] = (model, field_name)
    return names


SETTING_ENV_NAMES = _setting_env_names()


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def pyproject() -> dict[str, Any]:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())
