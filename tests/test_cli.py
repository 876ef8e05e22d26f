"""The command line as a user runs it: prepare-model and solve."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.support import free_port, service_cli


def _cli(*args: str, env: dict[str, str] | None = None) -> str:
    return service_cli(*args, env=env).stdout


def test_prepare_model_is_cached_and_merges_the_distilled_weights(model_dir: Path) -> None:
    from service.engine import local_hardware
    from service.model_prep import distilled_model_dir, is_prepared
    from service.settings import SHIPPED_ADAPTER, Settings, shipped_adapters

    out = _cli("prepare-model", env={"DIVCONQ_DATA_DIR": str(model_dir.parent.parent)})
    # As the CLI resolves it: DIVCONQ_DECOMPOSER__DTYPE wins over the CPU's flags.
    dtype = local_hardware(Settings().decomposer).dtype
    merged = distilled_model_dir(model_dir, Path(shipped_adapters()[SHIPPED_ADAPTER]), dtype)
    assert out.split() == ["base:", str(model_dir), "distilled:", str(merged)]
    assert (model_dir / "model.safetensors").stat().st_size > 400_000_000
    # Saved in the engine's dtype: float32 (twice the bf16 base) where bf16 is emulated.
    assert is_prepared(merged)
    size = (merged / "model.safetensors").stat().st_size
    assert size > (800_000_000 if dtype == "float32" else 400_000_000)


def test_solve_against_running_service(service_url: str) -> None:
    out = _cli("solve", "Tom has 3 apples and buys 5 more. How many now?", "--url", service_url)
    assert out.startswith("answer: ")
    assert "decomposer" in out and "solver" in out and "total" in out


def test_solve_in_process_on_embedded_default(model_dir: Path) -> None:
    """No service running, no solver configured: the embedded model does both roles."""
    env = {
        "DIVCONQ_DATA_DIR": str(model_dir.parent.parent),
        "DIVCONQ_PORT": str(free_port()),  # nothing listens there
        "DIVCONQ_SOLVER__MAX_TOKENS": "16",
    }
    for var in list(os.environ):
        if var.startswith("DIVCONQ_SOLVER__"):
            env[var] = ""
    proc = service_cli(
        "solve", "A pen costs $3. How much do 4 pens cost?", "--mode", "static", "--json", env=env
    )
    body = json.loads(proc.stdout)
    # The engine is shut down before the interpreter exits: nothing is printed after.
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    assert body["mode"] == "static"
    assert body["usage"]["solver"]["model"] == "gemma-3-270m"
    assert body["usage"]["solver"]["calls"] == len(body["subquestions"]) + 1
    assert body["usage"]["decomposer"]["calls"] == 1
    assert body["usage"]["solver"]["completion_tokens"] > 0
