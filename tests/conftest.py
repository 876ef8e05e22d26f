"""Session fixtures: the embedded model, a real ``vllm serve`` solver, and the
service itself as a subprocess with the real in-process vLLM decomposer.

These are expensive (about a minute of CPU each on a 2-core box), so they are
started once per test session, overlapped where they can be, and shared:

- ``stack``: ``vllm serve`` as the solver and the service beside it, with a
  tiny adapter of the suite's own training (``tiny_adapter``) next to the
  shipped one; contract, observability, SDK, fuzz and adapter tests use it;
- ``embedded_url``: the service on the embedded default, as ``make serve``
  starts it; the distilled pair's and the benchmarks' tests use it. Its tests
  run together and it stops after the last of them, before the stack starts
  (both at once come close to 24 GiB).

A test that uses one of them (``REAL_STACK``) is marked ``slow`` here,
whether or not it says so itself: ``make unit`` (``pytest -m "not slow"``)
never waits for an engine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import httpx
import pytest

from service.engine import engine_env, engine_hardware
from service.model_prep import prepare_embedded_model
from service.settings import DecomposerSettings, Settings
from tests.support import Proc, free_port, service_cli, start_process, wait_until

SOLVER_NAME = "solver-gemma"
# Short answers keep the CPU test suite fast; the contract does not care.
SOLVER_MAX_TOKENS = 24
STARTUP_TIMEOUT_S = 600
# Sent to the solver (vllm serve ignores it); must never show in logs or responses.
SOLVER_API_KEY = "sk-test-9c1f0e7d"


# Fixtures that need the prepared model, the vLLM engine or `vllm serve`.
REAL_STACK = frozenset(
    {
        "model_dir",
        "stack",
        "service_url",
        "solver_url",
        "client",
        "embedded_url",
        "tiny_adapter",
        "solver_proc",
    }
)


# Session fixtures that keep engines alive until the session ends (the tiny
# adapter leads to the stack: it trains while `vllm serve` loads).
LONG_LIVED = frozenset({"stack", "service_url", "solver_url", "client", "embedded_url"})
LONG_LIVED |= {"tiny_adapter", "solver_proc"}


def _fixtures(item: pytest.Item | None) -> set[str]:
    return set(getattr(item, "fixturenames", ()))


def _memory_group(item: pytest.Item) -> int:
    """0: no long-lived engine; 1: the embedded-default service; 2: the contract stack."""
    names = _fixtures(item)
    if "embedded_url" in names:
        return 1
    return 2 if LONG_LIVED & names else 0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if REAL_STACK & _fixtures(item):
            item.add_marker(pytest.mark.slow)
    # Engines held together outgrow a 24 GiB machine (the kernel's OOM killer
    # took an engine core once), so the slow tier runs in three groups: tests
    # that start an engine of their own (the in-process CLI, the local
    # teacher, the batching benchmark), then the embedded-default service's
    # tests, which stop it when they are done (pytest_runtest_teardown), then
    # the contract stack's. A stable sort: file order within each group.
    items.sort(key=_memory_group)


# The running embedded-default service, for the hook below.
_embedded: list[Proc] = []


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    # The embedded service's last test is done (they run together, see
    # above): stop it now rather than at the end of the session, so that it
    # and the contract stack never hold memory at the same time.
    if _embedded and "embedded_url" in _fixtures(item) - _fixtures(nextitem):
        _embedded.pop().stop()


@pytest.fixture(scope="session")
def model_dir() -> Path:
    return prepare_embedded_model(Settings().embedded_model_dir)


@pytest.fixture(scope="session")
def logs_dir() -> Path:
    path = Path(os.environ.get("DIVCONQ_TEST_LOGS", tempfile.mkdtemp(prefix="divconq-test-")))
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class Stack:
    solver: Proc
    service: Proc
    early_readyz: httpx.Response
    early_solve: httpx.Response


@dataclass
class TinyAdapter:
    """A real LoRA run on a tiny slice: 2 steps, then resumed to 3."""

    path: Path
    data: Path
    resumed: subprocess.CompletedProcess[str]
    # checkpoints/ after the first run (before the resumed run prunes them)
    first_checkpoints: list[str]


def _chat_template_file() -> str:
    return str(resources.files("service").joinpath("templates/chat_template.jinja"))


@pytest.fixture(scope="session")
def tiny_adapter(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> TinyAdapter:
    tmp = tmp_path_factory.mktemp("distill")
    service_cli("distill", "data", "--limit", "12", "--held-out", "4", "--out", str(tmp / "data"))
    common = ["--data", str(tmp / "data"), "--out", str(tmp / "adapter"), "--batch-size", "2"]
    common += ["--save-every", "1", "--eval-every", "1", "--threads", "2"]
    service_cli("distill", "train", *common, "--max-steps", "2")
    checkpoints = sorted(p.name for p in (tmp / "adapter/checkpoints").iterdir())
    resumed = service_cli("distill", "train", *common, "--max-steps", "3")
    return TinyAdapter(tmp / "adapter", tmp / "data", resumed, checkpoints)


@pytest.fixture(scope="session")
def solver_proc(model_dir: Path, logs_dir: Path) -> Iterator[Proc]:
    """`vllm serve` on the embedded checkpoint, started; ``stack`` waits for it."""
    port = free_port()
    hardware = engine_hardware(DecomposerSettings())
    solver = start_process(
        [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(model_dir),
            "--served-model-name",
            SOLVER_NAME,
            "--chat-template",
            _chat_template_file(),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--max-model-len",
            "2048",
            "--enforce-eager",
            # The dtype and OpenMP binding the service's own engine resolves to.
            "--dtype",
            hardware.dtype,
        ],
        env=engine_env(DecomposerSettings(), hardware),
        log=logs_dir / "solver.log",
        url=f"http://127.0.0.1:{port}/v1",
    )
    try:
        yield solver
    finally:
        solver.stop()


@pytest.fixture(scope="session")
def stack(
    solver_proc: Proc, tiny_adapter: TinyAdapter, model_dir: Path, logs_dir: Path
) -> Iterator[Stack]:
    """`vllm serve` as the solver and `python -m service serve` with a user
    adapter ("tiny", trained here while `vllm serve` loads) beside the shipped one.

    One service for the contract, observability, SDK and adapter tests: each
    engine start costs a minute of CPU on a 2-core box.
    """
    # Fixture order is the argument order: `vllm serve` loads while the adapter trains.
    solver = solver_proc
    service_port = free_port()
    service = start_process(
        [sys.executable, "-m", "service", "serve", "--port", str(service_port)],
        env={
            "DIVCONQ_SOLVER__BASE_URL": solver.url,
            "DIVCONQ_SOLVER__MODEL": SOLVER_NAME,
            "DIVCONQ_SOLVER__MAX_TOKENS": str(SOLVER_MAX_TOKENS),
            "DIVCONQ_SOLVER__API_KEY": SOLVER_API_KEY,
            "DIVCONQ_DATA_DIR": str(model_dir.parent.parent),
            "DIVCONQ_DECOMPOSER__ADAPTERS": json.dumps({"tiny": str(tiny_adapter.path)}),
            "DIVCONQ_PRICES": json.dumps(
                {SOLVER_NAME: {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}
            ),
        },
        log=logs_dir / "service.log",
        url=f"http://127.0.0.1:{service_port}",
    )
    try:
        wait_until(
            lambda: httpx.get(f"{service.url}/healthz").status_code == 200,
            timeout_s=120,
            what="service /healthz",
            proc=service.proc,
            log=service.log,
        )
        # Captured while the engine is still loading: /solve must say 503.
        early_readyz = httpx.get(f"{service.url}/readyz")
        early_solve = httpx.post(f"{service.url}/solve", json={"question": "What is 2 + 3?"})
        wait_until(
            lambda: httpx.get(f"{solver.url}/models").status_code == 200,
            timeout_s=STARTUP_TIMEOUT_S,
            what="vllm serve",
            proc=solver.proc,
            log=solver.log,
        )
        wait_until(
            lambda: httpx.get(f"{service.url}/readyz").status_code == 200,
            timeout_s=STARTUP_TIMEOUT_S,
            what="service /readyz",
            proc=service.proc,
            log=service.log,
        )
        yield Stack(solver, service, early_readyz, early_solve)
    finally:
        service.stop()


@pytest.fixture(scope="session")
def service_url(stack: Stack) -> str:
    return stack.service.url


@pytest.fixture(scope="session")
def solver_url(stack: Stack) -> str:
    return stack.solver.url


@pytest.fixture(scope="session")
def client(service_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service_url, timeout=300) as c:
        yield c


@pytest.fixture(scope="session")
def embedded_url(model_dir: Path, logs_dir: Path) -> Iterator[str]:
    """`python -m service serve` on the embedded default: the distilled pair, no remote solver."""
    port = free_port()
    service = start_process(
        [sys.executable, "-m", "service", "serve", "--port", str(port)],
        env={"DIVCONQ_DATA_DIR": str(model_dir.parent.parent)},
        log=logs_dir / "embedded.log",
        url=f"http://127.0.0.1:{port}",
    )
    _embedded.append(service)
    try:
        wait_until(
            lambda: httpx.get(f"{service.url}/readyz").status_code == 200,
            timeout_s=STARTUP_TIMEOUT_S,
            what="embedded service /readyz",
            proc=service.proc,
            log=service.log,
        )
        yield service.url
    finally:
        service.stop()  # a no-op when the hook stopped it already
