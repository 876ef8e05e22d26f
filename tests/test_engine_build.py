"""How the in-process engine is built: vLLM's tokenizer copies leave the critical path.

vLLM is replaced by a stand-in module here (importing it costs seconds); the
real one goes through the same code in every slow-tier engine start.
"""

from __future__ import annotations

import sys
import threading
import types
from typing import Any

import pytest

from service.engine import tokenizer_copies_in_background


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
