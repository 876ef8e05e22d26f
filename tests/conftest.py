"""Session fixtures: the embedded model, a real ``vllm serve`` solver, and the
service itself as a subprocess with the real in-process vLLM decomposer.

These are expensive (about a minute of CPU each on a 2-core box), so they are
started once per test session, ahead of the tests that need them
(``tests/stacks.py``), and shared:

- ``stack``: ``vllm serve`` as the solver and the service beside it, with a
  tiny adapter of the suite's own training (``tiny_adapter``) next to the
  shipped one; contract, observability, SDK, fuzz and adapter tests use it;
- ``embedded_url``: the service on the embedded default, as ``make serve``
  starts it; the distilled pair's and the benchmarks' tests use it. It stops
  after the last of its tests.

A test that uses one of them (``REAL_STACK``) is marked ``slow`` here,
whether or not it says so itself: ``make unit`` (``pytest -m "not slow"``)
never waits for an engine.

Two rules for every test, enforced here:

- a skip is a failure: whatever a test needs (promtool, Compose, kubectl,
  torch) is installed by ``make install``, so a test that skips has found a
  broken set-up, and saying "passed" would hide it;
- the fast tier reads no ``DIVCONQ_*`` variable from the caller's shell: an
  exported ``DIVCONQ_API_KEYS`` or solver URL must not change what it checks
  (tests that want a setting pass it, or set it with ``monkeypatch``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.core.settings import Settings
from service.embedded.model_prep import prepare_embedded_model
from tests.otlp_receiver import receiver
from tests.real_services import REAL_SERVICES, postgres_url, redis_url
from tests.stacks import Prestart, Stack, TinyAdapter, launch_embedded, launch_stack
from tests.support import Proc

# Fixtures defined elsewhere: the real services' (session) and an OTLP receiver's.
__all__ = ["postgres_url", "receiver", "redis_url"]

# Fixtures that need the prepared model, the vLLM engine or `vllm serve`.
REAL_STACK = frozenset(
    {"model_dir", "stack", "service_url", "solver_url", "client", "embedded_url", "tiny_adapter"}
)
# Session fixtures that keep engines alive until their last test.
LONG_LIVED = REAL_STACK - {"model_dir"}
# What is started ahead of its tests (DIVCONQ_TEST_PRESTART, comma-separated;
# empty: each starts when its first test asks, as on a machine short of memory).
PRESTART = os.environ.get("DIVCONQ_TEST_PRESTART", "embedded,stack")


def _fixtures(item: pytest.Item | None) -> set[str]:
    return set(getattr(item, "fixturenames", ()))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = (
            f"skipped ({reason}): this suite counts a skip as a failure; "
            "`make install` installs every tool the tests use"
        )


# Every app and service the tests start records its requests (the ledger is on
# by default): into a temp file of this session, never the user's data
# directory. Set before collection ends, so the services started ahead of their
# tests (pytest_collection_finish) inherit it too.
_LEDGER_DIR: tempfile.TemporaryDirectory[str] | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _LEDGER_DIR
    if "DIVCONQ_LEDGER_URL" not in os.environ:
        _LEDGER_DIR = tempfile.TemporaryDirectory(prefix="divconq-test-ledger-")
        os.environ["DIVCONQ_LEDGER_URL"] = f"sqlite:///{_LEDGER_DIR.name}/ledger.sqlite3"


def pytest_unconfigure(config: pytest.Config) -> None:
    if _LEDGER_DIR is not None:
        os.environ.pop("DIVCONQ_LEDGER_URL", None)
        _LEDGER_DIR.cleanup()


@pytest.fixture(scope="session")
def _ledger_in_a_temp_dir() -> str:
    """The session's ledger URL (``pytest_configure``)."""
    return os.environ["DIVCONQ_LEDGER_URL"]


@pytest.fixture(autouse=True)
def _no_divconq_environment(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, _ledger_in_a_temp_dir: str
) -> None:
    """The fast tier builds its Settings from what each test gives, never the shell's
    (but for the ledger's file: a temp one), nor from this machine's prepared model:
    usage estimates count words unless a test gives a tokenizer (the default, the
    prepared model's 33 MB tokenizer, takes seconds to load in every worker, and
    only where ``make serve`` has been run)."""
    if request.node.get_closest_marker("slow") is not None:
        return
    for name in list(os.environ):
        if name.startswith("DIVCONQ_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DIVCONQ_LEDGER_URL", _ledger_in_a_temp_dir)
    monkeypatch.setenv("DIVCONQ_USAGE_TOKENIZER", "none")


def _memory_group(item: pytest.Item) -> int:
    """0: no long-lived engine; 1: the embedded-default service; 2: the contract stack."""
    names = _fixtures(item)
    if "embedded_url" in names:
        return 1
    return 2 if LONG_LIVED & names else 0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if (REAL_STACK | REAL_SERVICES) & _fixtures(item):
            item.add_marker(pytest.mark.slow)
    # The slow tier runs in three groups: tests that start an engine of
    # their own (the in-process CLI, the local teacher, the batching
    # benchmark) while the long-lived services start in the background, then
    # the embedded-default service's tests, which stop it when they are done
    # (pytest_runtest_teardown), then the contract stack's, whose lazily
    # started base engine never meets the embedded one (engines held together
    # outgrow a 24 GiB machine: the kernel's OOM killer took one once). A
    # stable sort: file order within each group.
    items.sort(key=_memory_group)


_prestart = Prestart()
_paths: dict[str, Path] = {}


def _model_dir() -> Path:
    if "model" not in _paths:
        _paths["model"] = prepare_embedded_model(Settings().embedded_model_dir)
    return _paths["model"]


def _logs_dir() -> Path:
    if "logs" not in _paths:
        logs = os.environ.get("DIVCONQ_TEST_LOGS") or tempfile.mkdtemp(prefix="divconq-test-")
        _paths["logs"] = Path(logs)
        _paths["logs"].mkdir(parents=True, exist_ok=True)
    return _paths["logs"]


def _embedded(pre: Prestart) -> Proc:
    return launch_embedded(pre, _model_dir(), _logs_dir())


def _stack(pre: Prestart) -> Stack:
    return launch_stack(pre, _model_dir(), _logs_dir())


def pytest_collection_finish(session: pytest.Session) -> None:
    # After deselection: `make unit` selects no test that needs them.
    if session.config.option.collectonly:
        return
    needed = set().union(*(_fixtures(item) for item in session.items))
    wanted = {name.strip() for name in PRESTART.split(",")}
    # The embedded service first: its tests come first.
    if "embedded" in wanted and "embedded_url" in needed:
        _prestart.start("embedded", _embedded)
    if "stack" in wanted and (LONG_LIVED - {"embedded_url"}) & needed:
        _prestart.start("stack", _stack)


def pytest_sessionfinish(session: pytest.Session) -> None:
    _prestart.close()


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    # The embedded service's last test is done (they run together, see
    # above): stop it now rather than at the end of the session, so that it
    # and the contract stack's base engine never hold memory at the same time.
    if "embedded_url" in _fixtures(item) - _fixtures(nextitem):
        _prestart.stop("embedded")


@pytest.fixture(scope="session")
def model_dir() -> Path:
    return _model_dir()


@pytest.fixture(scope="session")
def logs_dir() -> Path:
    return _logs_dir()


@pytest.fixture(scope="session")
def stack() -> Stack:
    """`vllm serve` as the solver and `python -m service serve` with a user
    adapter ("tiny", trained while `vllm serve` loads) beside the shipped one.

    One service for the contract, observability, SDK and adapter tests: each
    engine start costs a minute of CPU on a 2-core box.
    """
    stack_: Stack = _prestart.result("stack", _stack)
    return stack_


@pytest.fixture(scope="session")
def tiny_adapter(stack: Stack) -> TinyAdapter:
    return stack.tiny


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
def embedded_url() -> str:
    """`python -m service serve` on the embedded default: the distilled pair, no remote solver."""
    service: Proc = _prestart.result("embedded", _embedded)
    return service.url
