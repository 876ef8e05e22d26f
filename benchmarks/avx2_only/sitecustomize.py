"""Make this process see an AVX2-only x86 CPU (no AVX-512, no native bf16, no AMX).

For ``benchmarks/decompose_speed.py --isa avx2``: the default engine
settings matter most on AVX2-only CPUs, and the machine at hand may have
AVX-512. Python loads this module at start-up in every process whose
``PYTHONPATH`` holds this folder (the service, vLLM's engine core, its
workers), so the whole process tree sees the same CPU.

Three layers pick kernels by ISA, and each is capped here:

- vLLM reads ``torch.cpu._is_avx512_supported`` / ``_is_avx512_bf16_supported``
  / ``_is_amx_tile_supported`` to choose its kernel library (``_C_AVX2``), its
  attention ISA and its small-GEMM path: those return False below, patched
  the moment ``torch.cpu`` is imported (importing torch here would slow every
  start);
- ATen's vectorised kernels: ``ATEN_CPU_CAPABILITY=avx2``;
- oneDNN, which runs vLLM's linear layers: ``ONEDNN_MAX_CPU_ISA=AVX2``.

The benchmark sets both variables; this module only does the first layer.
It is an emulation: caches, clocks and memory stay this machine's.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from types import ModuleType
from typing import Any


def _cap(module: ModuleType) -> None:
    for name in (
        "_is_avx512_supported",
        "_is_avx512_vnni_supported",
        "_is_avx512_bf16_supported",
        "_is_amx_tile_supported",
        "_is_amx_fp16_supported",
    ):
        if hasattr(module, name):
            setattr(module, name, lambda: False)


class _CapTorchCpu(importlib.abc.MetaPathFinder):
    """Lets ``torch.cpu`` load as usual, then caps its ISA probes."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != "torch.cpu":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_and_cap(module: ModuleType) -> None:
            exec_module(module)
            _cap(module)

        loader.exec_module = exec_and_cap  # type: ignore[method-assign]
        return spec


sys.meta_path.insert(0, _CapTorchCpu())
