"""The in-process engine: tokenizer copies off the critical path, a core that starts, a dead engine.

vLLM is replaced by a stand-in module here (importing it costs seconds); the
real one goes through the same code in every slow-tier engine start.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sys
import threading
import types
from typing import Any, cast

import pytest

from service.core.errors import InvalidRequest, NotReady
from service.core.settings import DecomposerSettings
from service.embedded.engine import EmbeddedEngine, Generation, tokenizer_copies_in_background


def _fake_vllm_renderer(monkeypatch: pytest.MonkeyPatch, pool: Any) -> types.ModuleType:
    hf = types.ModuleType("vllm.renderers.hf")
    hf.maybe_make_thread_pool = pool  # type: ignore[attr-defined]
    renderers = types.ModuleType("vllm.renderers")
    renderers.hf = hf  # type: ignore[attr-defined]
    vllm = types.ModuleType("vllm")
    vllm.renderers = renderers  # type: ignore[attr-defined]
    for name, module in (("vllm", vllm), ("vllm.renderers", renderers), ("vllm.renderers.hf", hf)):
        monkeypatch.setitem(sys.modules, name, module)
    return hf


def test_tokenizer_copies_run_beside_the_engine_build(monkeypatch: pytest.MonkeyPatch) -> None:
    started, release = threading.Event(), threading.Event()
    made: list[tuple[object, int, str]] = []

    def pool(tokenizer: object, copies: int = 1) -> object:
        started.set()
        release.wait(5)  # a deep copy of a large tokenizer: seconds
        made.append((tokenizer, copies, threading.current_thread().name))
        return tokenizer

    hf = _fake_vllm_renderer(monkeypatch, pool)
    tokenizer = object()
    with tokenizer_copies_in_background() as copying:
        # What vLLM's renderer does before it starts the engine core: it gets
        # its tokenizer back at once, while the copies are still being made.
        assert hf.maybe_make_thread_pool(tokenizer, 2) is tokenizer
        assert started.wait(5)
        assert made == []
    assert hf.maybe_make_thread_pool is pool  # vLLM's own function is back
    release.set()
    for thread in copying:
        thread.join(5)
    assert made == [(tokenizer, 2, "tokenizer-copies")]


def test_pool_function_restored_when_the_build_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    def pool(tokenizer: object, copies: int = 1) -> object:
        return tokenizer

    hf = _fake_vllm_renderer(monkeypatch, pool)
    with pytest.raises(RuntimeError), tokenizer_copies_in_background():
        raise RuntimeError("engine core failed to start")
    assert hf.maybe_make_thread_pool is pool


# --- an engine that died -----------------------------------------------------------------


class EngineDeadError(Exception):
    pass


class DeadAsyncLLM:
    """An ``AsyncLLM`` whose engine core was killed (the OOM killer, a crash)."""

    errored = True

    async def generate(self, *args: Any, **kwargs: Any) -> Any:
        raise EngineDeadError("EngineCore encountered an issue")
        yield  # an async generator, as vLLM's is


def _fake_vllm_generation(monkeypatch: pytest.MonkeyPatch) -> None:
    modules = {
        name: types.ModuleType(name)
        for name in ("vllm", "vllm.sampling_params", "vllm.v1", "vllm.v1.engine")
    }
    exceptions = types.ModuleType("vllm.v1.engine.exceptions")
    exceptions.EngineDeadError = EngineDeadError  # type: ignore[attr-defined]
    modules["vllm.v1.engine.exceptions"] = exceptions
    client_errors = types.ModuleType("vllm.exceptions")
    client_errors.VLLMClientError = VLLMClientError  # type: ignore[attr-defined]
    modules["vllm.exceptions"] = client_errors
    modules["vllm"].SamplingParams = dict  # type: ignore[attr-defined]
    modules["vllm.sampling_params"].RequestOutputKind = types.SimpleNamespace(  # type: ignore[attr-defined]
        FINAL_ONLY="final"
    )
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)


async def test_a_dead_engine_is_not_ready_and_answers_503(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_vllm_generation(monkeypatch)
    engine = EmbeddedEngine(DecomposerSettings(), "/models/m", "m")
    assert not engine.ready and not engine.dead  # not started yet: loading, not dead
    engine._engine = DeadAsyncLLM()  # type: ignore[assignment]
    assert engine.dead and not engine.ready
    with pytest.raises(NotReady) as caught:
        await engine.generate(Generation("2 + 3?", request_id="r1", max_tokens=4, temperature=0.0))
    assert caught.value.status_code == 503
    assert "engine stopped" in str(caught.value) and "restart" in str(caught.value)


class VLLMClientError(Exception):
    """vLLM's base of the errors it answers with a 4xx (``vllm.exceptions``)."""


class VLLMValidationError(VLLMClientError):
    """What the pinned vLLM raises for a prompt past max_model_len: not a ValueError."""


class RefusingAsyncLLM:
    errored = False

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    async def generate(self, *args: Any, **kwargs: Any) -> Any:
        raise self.exc
        yield  # an async generator, as AsyncLLM.generate is


@pytest.mark.parametrize(
    "exc",
    [
        VLLMValidationError(
            "The decoder prompt (length 2100) is longer than the maximum model length of 2048."
        ),
        ValueError("max_tokens must be at least 1"),
    ],
)
async def test_an_input_the_engine_refuses_is_a_422(
    monkeypatch: pytest.MonkeyPatch, exc: Exception
) -> None:
    _fake_vllm_generation(monkeypatch)
    engine = EmbeddedEngine(DecomposerSettings(), "/models/m", "m")
    engine._engine = RefusingAsyncLLM(exc)  # type: ignore[assignment]
    with pytest.raises(InvalidRequest) as caught:
        await engine.generate(Generation("2 + 3?", request_id="r1", max_tokens=4, temperature=0.0))
    assert caught.value.status_code == 422
    assert str(exc) in caught.value.message


# --- where the engine core is forked from ---------------------------------------------------


def _openmp_work() -> None:
    """Torch work with a GNU OpenMP parallel region (two threads), as weight merging does."""
    import torch

    torch.set_num_threads(2)
    torch.zeros(1 << 22).add_(1.0)


class _ForkedCoreLLM:
    """What ``_build`` returns here: vLLM's ``AsyncLLM`` reduced to its fork."""

    tokenizer = None
    errored = False

    def __init__(self) -> None:
        # vLLM forks the engine core from the building thread, and the core's
        # first torch call (InputBatch's zeros) opens a parallel region.
        core = multiprocessing.get_context("fork").Process(target=_openmp_work)
        core.start()
        core.join(60)
        self.core_hung = core.is_alive()
        if self.core_hung:
            core.kill()
            core.join()
        self.core_exitcode = core.exitcode


async def test_the_engine_core_is_not_forked_from_a_thread_that_ran_openmp(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The start hang of docs/benchmarks.md section 0, with vLLM reduced to its fork.

    The service merges the distilled weights in an executor thread just
    before it builds the engine. A core forked from that thread inherited its
    OpenMP pool and waited for its missing workers forever.
    """
    await asyncio.to_thread(_openmp_work)  # the merge, in asyncio's executor thread
    monkeypatch.setattr(EmbeddedEngine, "_build", lambda self: _ForkedCoreLLM())
    monkeypatch.setattr(EmbeddedEngine, "_find_turn_end_ids", lambda self: [])
    engine = EmbeddedEngine(DecomposerSettings(), "/models/m", "m")
    await engine.start()
    built = cast(_ForkedCoreLLM, engine._engine)
    assert not built.core_hung
    assert built.core_exitcode == 0


async def test_an_engine_build_that_fails_fails_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    def build(self: EmbeddedEngine) -> Any:
        raise RuntimeError("Engine core initialization failed")

    monkeypatch.setattr(EmbeddedEngine, "_build", build)
    engine = EmbeddedEngine(DecomposerSettings(), "/models/m", "m")
    with pytest.raises(RuntimeError, match="initialization failed"):
        await engine.start()
    assert not engine.ready
