"""Engine settings resolved from the CPU's flags, for both kinds of CPU, on any machine."""

from __future__ import annotations

import pytest

from service.core.settings import DecomposerSettings
from service.embedded.engine_config import engine_args, engine_env, engine_hardware
from service.embedded.hardware import (
    EngineHardware,
    cpu_ranges,
    native_bf16,
    omp_env,
    parse_cpu_flags,
    parse_cpu_ranges,
    resolve_dtype,
    resolve_executor,
    resolve_start_method,
    resolve_threads_bind,
)

# Trimmed /proc/cpuinfo of the two kinds of machine the project runs on.
AVX2_EPYC = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu vme sse sse2 ssse3 sse4_1 sse4_2 avx f16c avx2 fma bmi2
"""
AVX512_XEON = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 amx_tile
"""
ARM = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes sha1 bf16\n"


def test_flags_parsed_from_cpuinfo() -> None:
    assert "avx2" in parse_cpu_flags(AVX2_EPYC)
    assert {"avx512_bf16", "amx_bf16"} <= parse_cpu_flags(AVX512_XEON)
    assert "asimd" in parse_cpu_flags(ARM)
    assert parse_cpu_flags("") == frozenset()


@pytest.mark.parametrize(
    ("cpuinfo", "dtype"),
    [(AVX2_EPYC, "float32"), (AVX512_XEON, "bfloat16"), (ARM, "float32")],
)
def test_auto_dtype_follows_native_bf16(cpuinfo: str, dtype: str) -> None:
    flags = parse_cpu_flags(cpuinfo)
    assert resolve_dtype("auto", flags) == dtype
    assert native_bf16(flags) is (dtype == "bfloat16")


def test_gpu_and_explicit_dtypes() -> None:
    avx2 = parse_cpu_flags(AVX2_EPYC)
    assert resolve_dtype("auto", avx2, gpu=True) == "bfloat16"
    # An explicit setting always stands.
    assert resolve_dtype("bfloat16", avx2) == "bfloat16"
    assert resolve_dtype("float32", parse_cpu_flags(AVX512_XEON)) == "float32"


def test_threads_bind_uses_every_usable_cpu() -> None:
    assert resolve_threads_bind("auto", [0, 1]) == "0-1"
    assert resolve_threads_bind("auto", [0]) == "0"
    # A cpuset with holes (containers) keeps its holes.
    assert resolve_threads_bind("auto", [0, 1, 2, 5, 6]) == "0-2,5-6"
    # Reserving a core for the API process leaves at least one for the engine.
    assert resolve_threads_bind("auto", [0, 1, 2, 3], reserve=1) == "0-2"
    assert resolve_threads_bind("auto", [0], reserve=1) == "0"
    assert resolve_threads_bind("0,2", [0, 1, 2, 3]) == "0,2"
    assert cpu_ranges([3, 1, 2]) == "1-3"


def test_engine_args_and_env_are_pure() -> None:
    import os

    before = dict(os.environ)
    s = DecomposerSettings(kv_cache_gib=2)
    hw = EngineHardware("float32", "0-1", "AMD EPYC 7B13", native_bf16=False, executor="mp")
    assert engine_args(s, hw)["dtype"] == "float32"
    assert engine_env(s, hw) == {
        "VLLM_CPU_KVCACHE_SPACE": "2",
        "VLLM_CPU_OMP_THREADS_BIND": "0-1",
    }
    # In the engine-core process (no worker process of vLLM's to set them),
    # OpenMP's own variables must be there when that process starts.
    uni = EngineHardware("float32", "0,2-3", "AMD EPYC 7B13", native_bf16=False, executor="uni")
    assert engine_env(s, uni) == {
        "VLLM_CPU_KVCACHE_SPACE": "2",
        "VLLM_CPU_OMP_THREADS_BIND": "0,2-3",
        "OMP_NUM_THREADS": "3",
        "OMP_PLACES": "{0,2,3}",
        "OMP_PROC_BIND": "true",
    }
    assert dict(os.environ) == before


def test_executor_and_cpu_lists() -> None:
    assert resolve_executor("auto") == "uni" and resolve_executor("mp") == "mp"
    assert engine_hardware(DecomposerSettings()).executor == "uni"
    assert engine_hardware(DecomposerSettings(executor="mp")).executor == "mp"
    assert parse_cpu_ranges("0-2,5") == [0, 1, 2, 5]
    assert parse_cpu_ranges(cpu_ranges([7, 1, 2, 3])) == [1, 2, 3, 7]
    # vLLM's own words bind nothing here.
    assert parse_cpu_ranges("nobind") == [] and omp_env("nobind") == {}
    assert parse_cpu_ranges("auto") == [] and parse_cpu_ranges("1-") == []


def test_start_method() -> None:
    # The engine core is forked only where it runs the model itself, on CPU.
    assert resolve_start_method("auto", "uni") == "fork"
    assert resolve_start_method("auto", "mp") == "spawn"
    assert resolve_start_method("auto", "uni", gpu=True) == "spawn"
    assert resolve_start_method("spawn", "uni") == "spawn"
    assert engine_hardware(DecomposerSettings()).start_method == "fork"
    assert engine_hardware(DecomposerSettings(start_method="spawn")).start_method == "spawn"
    assert engine_hardware(DecomposerSettings(executor="mp")).as_dict()["start_method"] == "spawn"
