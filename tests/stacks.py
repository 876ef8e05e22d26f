"""The slow tier's long-lived processes, and their start ahead of the tests.

- the contract stack (``launch_stack``): ``vllm serve`` as the solver and
  ``python -m service serve`` beside it, with a tiny adapter trained here
  (``train_tiny_adapter``) next to the shipped one;
- the embedded default (``launch_embedded``): ``python -m service serve`` as
  ``make serve`` starts it, the distilled pair and no remote solver.

Each start is a minute or more, and about half of it runs on one core
(imports, weight loading, the tokenizer): on a 2-core box the other core sits
idle. So ``Prestart`` begins them in threads as soon as pytest knows which
tests it will run, and the tests that come first (those that start an engine
of their own) run meanwhile; a fixture then only waits for its future.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import httpx

from service.core.settings import DecomposerSettings
from service.embedded.engine_config import engine_env, engine_hardware
from tests.support import (
    FaultServer,
    Proc,
    free_port,
    serve_process,
    service_cli,
    start_process,
    wait_ready,
    wait_until,
)

SOLVER_NAME = "solver-gemma"
# Short answers keep the CPU test suite fast; the contract does not care.
SOLVER_MAX_TOKENS = 12
STARTUP_TIMEOUT_S = 600
# Sent to the solver (vllm serve ignores it); must never show in logs or responses.
SOLVER_API_KEY = "sk-test-9c1f0e7d"
PRICE = {"input_per_mtok": 1.0, "output_per_mtok": 2.0}


@dataclass
class TinyAdapter:
    """A real LoRA run on a tiny slice: 2 steps, then resumed to 3."""

    path: Path
    data: Path
    resumed: subprocess.CompletedProcess[str]
    # checkpoints/ after the first run (before the resumed run prunes them)
    first_checkpoints: list[str]


@dataclass
class Stack:
    solver: Proc
    service: Proc
    tiny: TinyAdapter
    early_readyz: httpx.Response
    early_solve: httpx.Response
    # The service's "stalled" solver profile: a server that takes each call
    # and answers none while the tests run, so a request that uses it is in
    # progress for as long as a test wants (tests/test_solve_contract.py).
    stalled: FaultServer


class Prestart:
    """Starts launches in background threads and stops what they started.

    Every process a launch starts is registered here first, so that
    ``close()`` stops it even when its launch is still waiting on it (a
    launch's wait fails at once when its process is gone).
    """

    def __init__(self) -> None:
        # One at a time, in the order asked: the first is needed first, and
        # two starts at once beside a test's own engine crowd 2 cores.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prestart")
        self._futures: dict[str, Future[Any]] = {}
        self._procs: list[Proc] = []
        self._lock = threading.Lock()

    def start(self, name: str, launch: Callable[[Prestart], Any]) -> None:
        """Begin ``launch(self)`` now, once per name."""
        with self._lock:
            if name not in self._futures:
                self._futures[name] = self._pool.submit(launch, self)

    def result(self, name: str, launch: Callable[[Prestart], Any]) -> Any:
        """What the launch named ``name`` returned, starting it if it has not begun."""
        self.start(name, launch)
        return self._futures[name].result()

    def stop(self, name: str) -> None:
        """Stop the process the launch named ``name`` returned, if it started one."""
        future = self._futures.get(name)
        if future is not None and future.done() and future.exception() is None:
            proc = future.result()
            assert isinstance(proc, Proc)
            proc.stop()

    def process(self, args: list[str], env: dict[str, str], log: Path, url: str) -> Proc:
        return self._track(start_process(args, env=env, log=log, url=url))

    def serve(self, env: dict[str, str], log: Path) -> Proc:
        """`python -m service serve` on a socket handed over (tests/support.py)."""
        return self._track(serve_process(env, log))

    def _track(self, proc: Proc) -> Proc:
        with self._lock:
            self._procs.append(proc)
        return proc

    def close(self) -> None:
        with self._lock:
            procs, self._procs = self._procs, []
        for proc in procs:
            proc.stop()
        self._pool.shutdown(wait=True, cancel_futures=True)


def _chat_template_file() -> str:
    return str(resources.files("service").joinpath("embedded/templates/chat_template.jinja"))


def train_tiny_adapter(tmp: Path) -> TinyAdapter:
    service_cli("distill", "data", "--limit", "12", "--held-out", "4", "--out", str(tmp / "data"))
    common = ["--data", str(tmp / "data"), "--out", str(tmp / "adapter"), "--batch-size", "2"]
    common += ["--save-every", "1", "--eval-every", "1", "--threads", "2"]
    service_cli("distill", "train", *common, "--max-steps", "2")
    checkpoints = sorted(p.name for p in (tmp / "adapter/checkpoints").iterdir())
    resumed = service_cli("distill", "train", *common, "--max-steps", "3")
    return TinyAdapter(tmp / "adapter", tmp / "data", resumed, checkpoints)


def start_solver(pre: Prestart, model_dir: Path, logs: Path) -> Proc:
    """`vllm serve` on the embedded checkpoint, started, not yet waited for."""
    port = free_port()
    hardware = engine_hardware(DecomposerSettings())
    args = [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    args += ["--model", str(model_dir), "--served-model-name", SOLVER_NAME]
    args += ["--chat-template", _chat_template_file(), "--host", "127.0.0.1"]
    args += ["--port", str(port), "--max-model-len", "2048", "--enforce-eager"]
    # The dtype and OpenMP binding the service's own engine resolves to.
    args += ["--dtype", hardware.dtype]
    return pre.process(
        args,
        env=engine_env(DecomposerSettings(), hardware),
        log=logs / "solver.log",
        url=f"http://127.0.0.1:{port}/v1",
    )


def launch_stack(pre: Prestart, model_dir: Path, logs: Path) -> Stack:
    """`vllm serve` loads while the tiny adapter trains; then the service
    starts with it. Two statuses are captured while the engine still loads."""
    solver = start_solver(pre, model_dir, logs)
    tiny = train_tiny_adapter(Path(tempfile.mkdtemp(prefix="distill-", dir=logs)))
    stalled = FaultServer("stall", stall_s=3600).__enter__()
    stalled_profile = {"base_url": stalled.url, "model": "stalled", "read_timeout_s": 3600}
    env = {
        "DIVCONQ_SOLVER__BASE_URL": solver.url,
        "DIVCONQ_SOLVER__MODEL": SOLVER_NAME,
        "DIVCONQ_SOLVER__MAX_TOKENS": str(SOLVER_MAX_TOKENS),
        "DIVCONQ_SOLVER__API_KEY": SOLVER_API_KEY,
        "DIVCONQ_DATA_DIR": str(model_dir.parent.parent),
        "DIVCONQ_DECOMPOSER__ADAPTERS": json.dumps({"tiny": str(tiny.path)}),
        "DIVCONQ_PRICES": json.dumps({SOLVER_NAME: PRICE}),
        "DIVCONQ_SOLVERS": json.dumps({"stalled": stalled_profile}),
    }
    service = pre.serve(env, logs / "service.log")
    wait_ready(service, "service /healthz", timeout_s=120, path="/healthz")
    # Captured while the engine is still loading: /solve must say 503.
    early_readyz = httpx.get(f"{service.url}/readyz")
    early_solve = httpx.post(f"{service.url}/solve", json={"question": "What is 2 + 3?"})
    for proc, path, what in ((solver, "/models", "vllm serve"), (service, "/readyz", "service")):
        wait_until(
            lambda: httpx.get(f"{proc.url}{path}").status_code == 200,  # noqa: B023
            timeout_s=STARTUP_TIMEOUT_S,
            what=what,
            proc=proc.proc,
            log=proc.log,
        )
    return Stack(solver, service, tiny, early_readyz, early_solve, stalled)


def launch_embedded(pre: Prestart, model_dir: Path, logs: Path) -> Proc:
    """`python -m service serve` on the embedded default, ready."""
    service = pre.serve({"DIVCONQ_DATA_DIR": str(model_dir.parent.parent)}, logs / "embedded.log")
    wait_ready(service, "embedded service /readyz", STARTUP_TIMEOUT_S)
    return service
