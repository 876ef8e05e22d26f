"""What the vLLM engine is built with: its arguments and environment.

Resolved from the decomposer settings and this machine's hardware
(``service/embedded/hardware.py``), for the service's engine
(``service/embedded/engine.py``) and for offline use (``distill data
--local-teacher``). torch and vLLM are imported only inside the functions
that ask them something, never at import time.
"""

from __future__ import annotations

import os
from typing import Any

from service.core.settings import DecomposerSettings
from service.embedded.hardware import (
    EngineHardware,
    cpu_model,
    native_bf16,
    omp_env,
    read_cpu_flags,
    resolve_dtype,
    resolve_executor,
    resolve_start_method,
    resolve_threads_bind,
    usable_cpus,
)


def engine_hardware(s: DecomposerSettings, *, gpu: bool = False) -> EngineHardware:
    """The dtype and OpenMP binding these settings resolve to on this machine."""
    flags = read_cpu_flags()
    executor = resolve_executor(s.executor)
    return EngineHardware(
        dtype=resolve_dtype(s.dtype, flags, gpu=gpu),
        omp_threads_bind=resolve_threads_bind(s.omp_threads_bind, usable_cpus()),
        cpu_model=cpu_model(),
        native_bf16=native_bf16(flags),
        executor=executor,
        start_method=resolve_start_method(s.start_method, executor, gpu=gpu),
    )


def local_hardware(s: DecomposerSettings) -> EngineHardware:
    """``engine_hardware`` for this machine, asking torch whether a GPU is here."""
    import torch

    return engine_hardware(s, gpu=bool(torch.cuda.is_available()))


def engine_args(s: DecomposerSettings, hw: EngineHardware) -> dict[str, Any]:
    """The vLLM engine arguments the decomposer settings fix, for the service's
    engine and for offline use (``distill data --local-teacher``)."""
    return {
        "max_model_len": s.max_model_len,
        "enforce_eager": s.enforce_eager,
        "dtype": hw.dtype,
        "gpu_memory_utilization": s.gpu_memory_utilization,
    }


def engine_env(s: DecomposerSettings, hw: EngineHardware) -> dict[str, str]:
    """Environment vLLM's CPU worker reads when its engine process starts.

    The caller applies it (``apply_engine_env``) before the engine is built:
    the engine core is a spawned process that inherits the environment.
    Variables already set by the operator win.
    """
    env = {
        "VLLM_CPU_KVCACHE_SPACE": str(s.kv_cache_gib),
        "VLLM_CPU_OMP_THREADS_BIND": hw.omp_threads_bind,
    }
    if hw.executor == "uni":
        # The model runs in the engine-core process: it must start bound.
        env |= omp_env(hw.omp_threads_bind)
    return env


def executor_backend(hw: EngineHardware) -> Any:
    """vLLM's ``distributed_executor_backend`` for ``hw.executor``.

    The class, not the name ``"uni"``: vLLM's CPU platform turns the name
    into ``"mp"``; a class it leaves alone.
    """
    if hw.executor != "uni":
        return hw.executor
    from vllm.v1.executor.uniproc_executor import UniProcExecutor

    return UniProcExecutor


def apply_engine_env(env: dict[str, str]) -> None:
    for key, value in env.items():
        os.environ.setdefault(key, value)
