"""The command line as a user runs it: prepare-model and solve."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.support import refused_port, service_cli


def _cli(*args: str, env: dict[str, str] | None = None) -> str:
    return service_cli(*args, env=env).stdout


def test_prepare_model_is_cached_and_merges_the_distilled_weights(model_dir: Path) -> None:
    from service.core.settings import SHIPPED_ADAPTER, Settings, shipped_adapters
    from service.embedded.engine_config import local_hardware
    from service.embedded.model_prep import distilled_model_dir, is_prepared

    out = _cli("prepare-model", env={"DIVCONQ_DATA_DIR": str(model_dir.parent.parent)})
    # As the CLI resolves it: DIVCONQ_DECOMPOSER__DTYPE wins over the CPU's flags.
    dtype = local_hardware(Settings().decomposer).dtype
    vocabulary = Settings().decomposer.vocabulary
    adapter = Path(shipped_adapters()[SHIPPED_ADAPTER])
    merged = distilled_model_dir(model_dir, adapter, dtype, vocabulary)
    assert out.split() == ["base:", str(model_dir), "distilled:", str(merged)]
    assert (model_dir / "model.safetensors").stat().st_size > 400_000_000
    # Saved in the engine's dtype: float32 (twice the bf16 base) where bf16 is emulated.
    assert is_prepared(merged)
    # The task's 34k tokens of 262k (service/embedded/vocab.py): a smaller embedding.
    config = json.loads((merged / "config.json").read_text())
    tokenizer = json.loads((merged / "tokenizer.json").read_text())
    if vocabulary == "task":
        assert config["vocab_size"] == len(tokenizer["model"]["vocab"]) < 50_000
    else:
        assert config["vocab_size"] == len(tokenizer["model"]["vocab"]) == 262_144
    size = (merged / "model.safetensors").stat().st_size
    assert size > (400_000_000 if dtype == "float32" else 200_000_000)


def test_solve_against_running_service(service_url: str) -> None:
    out = _cli("solve", "Tom has 3 apples and buys 5 more. How many now?", "--url", service_url)
    assert out.startswith("answer: ")
    assert "decomposer" in out and "solver" in out and "total" in out


def test_solve_in_process_on_embedded_default(model_dir: Path) -> None:
    """No service running, no solver configured: the embedded model does both roles."""
    with refused_port() as port:  # nothing listens there
        env = {
            "DIVCONQ_DATA_DIR": str(model_dir.parent.parent),
            "DIVCONQ_PORT": str(port),
            "DIVCONQ_SOLVER__MAX_TOKENS": "16",
        }
        for var in list(os.environ):
            if var.startswith("DIVCONQ_SOLVER__"):
                env[var] = ""
        proc = service_cli(
            "solve",
            "A pen costs $3. How much do 4 pens cost?",
            "--mode",
            "static",
            "--json",
            env=env,
        )
    body = json.loads(proc.stdout)
    # The engine is shut down before the interpreter exits: nothing is printed after.
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    assert body["mode"] == "static"
    assert body["usage"]["solver"]["model"] == "gemma-3-270m"
    assert body["usage"]["solver"]["calls"] == len(body["subquestions"]) + 1
    assert body["usage"]["decomposer"]["calls"] == 1
    assert body["usage"]["solver"]["completion_tokens"] > 0


def test_a_lost_readiness_probe_costs_seconds_not_the_read_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A probe that gets no answer counts as "not yet"; the next one is asked at once."""
    import httpx2

    from service.cli import local_service as cli

    # The clock the readiness poll sleeps on (procs.wait_until's).
    monkeypatch.setattr("service.cli.procs.time.sleep", lambda _s: None)
    seen: list[dict[str, float | None]] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request.extensions["timeout"])
        if len(seen) == 1:
            raise httpx2.ReadTimeout("no answer", request=request)
        if len(seen) == 2:
            return httpx2.Response(503, json={"decomposer": {"state": "starting"}})
        return httpx2.Response(200, json={"status": "ready"})

    # The CLI's own client: a long read timeout, for /solve.
    with httpx2.Client(
        transport=httpx2.MockTransport(handler), timeout=httpx2.Timeout(600.0, connect=2.0)
    ) as client:
        cli.wait_ready(client, "http://svc", timeout_s=60)
    assert len(seen) == 3
    assert all(t["read"] == cli.PROBE_TIMEOUT_S for t in seen)


def test_wait_ready_names_a_failed_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx2

    from service.cli import local_service as cli

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(503, json={"decomposer": {"state": "failed: out of memory"}})

    with (
        httpx2.Client(transport=httpx2.MockTransport(handler)) as client,
        pytest.raises(SystemExit, match="did not become ready: failed: out of memory"),
    ):
        cli.wait_ready(client, "http://svc", timeout_s=60)


def test_serve_that_merges_the_distilled_weights_itself_becomes_ready(
    model_dir: Path, tmp_path: Path
) -> None:
    """`serve` with no `prepare-model` for this dtype: it merges, then starts the engine.

    Until the engine was built in a thread of its own, every such start hung:
    the engine core, forked from the thread that had just merged, waited
    forever on OpenMP workers it did not have (docs/benchmarks.md, section 0).
    """
    import shutil

    import httpx

    from tests.stacks import STARTUP_TIMEOUT_S
    from tests.support import serve_process, wait_ready

    models = tmp_path / "models"
    models.mkdir()
    (models / model_dir.name).symlink_to(model_dir)  # the base model only
    service = serve_process(
        {"DIVCONQ_DATA_DIR": str(tmp_path), "DIVCONQ_DECOMPOSER__BASE_ENGINE": "off"},
        tmp_path / "serve.log",
    )
    try:
        wait_ready(service, "serve after merging in-process", STARTUP_TIMEOUT_S)
        merged = [p for p in models.iterdir() if p.name.startswith(f"{model_dir.name}-distilled")]
        assert len(merged) == 1 and (merged[0] / "model.safetensors").is_file()
        resp = httpx.post(
            f"{service.url}/decompose",
            json={"question": "Tom has 3 apples and buys 5 more. How many now?"},
            timeout=120,
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["subquestions"]
    finally:
        service.stop()
        for path in models.iterdir():
            if not path.is_symlink():
                shutil.rmtree(path)  # a gigabyte of merged weights
