"""What this machine's CPU can do, and the engine settings that follow from it.

vLLM's CPU backend runs bfloat16 fast only where the CPU has native bf16
(AVX512-BF16 or AMX); elsewhere (AVX2-only CPUs: most laptops, many cloud
VMs) bf16 is emulated and float32 decodes 3-5x faster (docs/benchmarks.md).
Its OpenMP threads also default to one core unless they are bound: binding
them to every core this process may use doubles throughput on a 2-core box.

Everything here is pure and takes the flags as input, so the resolution is
tested for both kinds of CPU on any machine.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def read_cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The first processor's feature flags ('flags' on x86, 'Features' on Arm)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    return parse_cpu_flags(text)


def parse_cpu_flags(cpuinfo_text: str) -> frozenset[str]:
    for line in cpuinfo_text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    return "unknown"


def native_bf16(flags: Iterable[str]) -> bool:
    return not NATIVE_BF16_FLAGS.isdisjoint(flags)


def resolve_dtype(requested: str, flags: Iterable[str], *, gpu: bool = False) -> str:
    """The dtype the engine should run: ``auto`` picks by hardware, anything else stands."""
    if requested != "auto":
        return requested
    if gpu or native_bf16(flags):
        return "bfloat16"
    return "float32"


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity mask; a container's cpuset)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def cpu_ranges(cpus: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2,5"``: the form VLLM_CPU_OMP_THREADS_BIND takes."""
    ids = sorted(set(cpus))
    parts = []
    i = 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        parts.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return ",".join(parts)


def resolve_threads_bind(requested: str, cpus: Sequence[int], *, reserve: int = 0) -> str:
    """VLLM_CPU_OMP_THREADS_BIND: ``auto`` binds every usable CPU but ``reserve``.

    ``reserve`` CPUs (the last ones) are left to the API process; measured
    on 2 cores, reserving one cost more decode throughput than the API
    process ever used (docs/benchmarks.md), so the default reserves none.
    """
    if requested != "auto":
        return requested
    keep = list(cpus)[: max(1, len(cpus) - reserve)]
    return cpu_ranges(keep)


def parse_cpu_ranges(spec: str) -> list[int]:
    """``"0-2,5"`` -> ``[0, 1, 2, 5]``; the inverse of ``cpu_ranges``. Not a list: ``[]``."""
    cpus: list[int] = []
    for part in spec.split(","):
        first, dash, last = part.strip().partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            return []
        cpus.extend(range(int(first), int(last if dash else first) + 1))
    return sorted(set(cpus))


def omp_env(threads_bind: str) -> dict[str, str]:
    """OpenMP's own variables for a thread binding such as ``"0-1"``.

    vLLM's multiprocess CPU executor sets these for the worker process it
    spawns. When the model runs in the engine-core process instead
    (``executor="uni"``), that process must start with them, because
    OpenMP reads them once, when it loads. ``nobind`` (or anything that is
    not a CPU list) binds nothing.
    """
    cpus = parse_cpu_ranges(threads_bind)
    if not cpus:
        return {}
    return {
        "OMP_NUM_THREADS": str(len(cpus)),
        "OMP_PLACES": "{" + ",".join(map(str, cpus)) + "}",
        "OMP_PROC_BIND": "true",
    }


def resolve_executor(requested: str) -> str:
    """``auto`` runs the model inside vLLM's engine-core process (``uni``).

    vLLM's CPU default (``mp``) starts a third process for the model worker:
    one more interpreter to import torch, vLLM and the tokenizer into, about
    17 s of a 2-core cold start, measured in docs/benchmarks.md, and no
    faster decoding.
    """
    return "uni" if requested == "auto" else requested


def resolve_start_method(requested: str, executor: str, *, gpu: bool = False) -> str:
    """``auto`` forks vLLM's engine-core process on CPU when it runs the model itself.

    vLLM's CPU platform always spawns: a fresh interpreter that imports torch
    and vLLM again, about 12 s of a 2-core cold start (docs/benchmarks.md). A
    forked core starts with the service's imports in place. Only with the
    ``uni`` executor: under ``mp`` the core would start worker processes of
    its own from a forked parent; and a GPU engine must spawn (CUDA does not
    survive fork).
    """
    if requested != "auto":
        return requested
    return "fork" if executor == "uni" and not gpu else "spawn"


@dataclass(frozen=True)
class EngineHardware:
    """The resolved engine settings, shown in /readyz and the start-up log."""

    dtype: str
    omp_threads_bind: str
    cpu_model: str
    native_bf16: bool
    executor: str = "uni"
    start_method: str = "spawn"

    def as_dict(self) -> dict[str, str | bool]:
        return {
            "dtype": self.dtype,
            "omp_threads_bind": self.omp_threads_bind,
            "executor": self.executor,
            "start_method": self.start_method,
            "cpu": self.cpu_model,
            "native_bf16": self.native_bf16,
        }
