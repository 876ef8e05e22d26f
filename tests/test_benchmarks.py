"""Smoke tests of the benchmark scripts: each runs on a tiny setting.

Benchmarks are not pass/fail on their figures; these only check that every
script runs from its one command, prints a table and writes valid JSON with
the keys the docs rely on. The scripts start their own servers (and, for
three of them, the real vLLM engine) as subprocesses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"


def run_script(
    name: str, args: list[str], out: Path, timeout_s: float
) -> tuple[dict[str, Any], str]:
    proc = subprocess.run(
        [sys.executable, str(BENCH / name), *args, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert proc.returncode == 0, f"{name} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert out.is_file(), proc.stdout
    report = json.loads(out.read_text())
    assert isinstance(report, dict)
    return report, proc.stdout


def markdown_table(stdout: str) -> list[str]:
    lines = [line for line in stdout.splitlines() if line.startswith("| ")]
    assert len(lines) >= 3, stdout  # header, rule, at least one row
    return lines


def test_every_script_has_help() -> None:
    # Started together: each is an interpreter start, most of its half second.
    names = [
        "overhead.py",
        "modes.py",
        "decomposer_batching.py",
        "cold_start.py",
        "limits_cost.py",
        "tracing_cpu.py",
        "otlp_encoding.py",
    ]
    procs = {
        name: subprocess.Popen(
            [sys.executable, str(BENCH / name), "--help"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in names
    }
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, f"{name}: {err}"
        assert "--smoke" in out, name


@pytest.mark.slow  # a real redis-server
def test_limits_cost_smoke(tmp_path: Path) -> None:
    report, stdout = run_script("limits_cost.py", ["--smoke"], tmp_path / "limits.json", 120)
    markdown_table(stdout)
    rows = {r["config"]: r for r in report["rows"]}
    assert set(rows) == {"off", "memory", "redis"}
    for row in rows.values():
        assert row["requests"] == 100
        assert 0 < row["admit_p50_us"] <= row["admit_p99_us"]


@pytest.mark.slow  # the service and a stub model as subprocesses, for seconds
def test_overhead_smoke(tmp_path: Path) -> None:
    report, stdout = run_script(
        "overhead.py",
        [
            *("--smoke", "--tracing-compare", "HEAD", "--tracing-aa", "--fresh"),
            *("--tracing-duration-s", "0.5"),
        ],
        tmp_path / "overhead.json",
        180,
    )
    markdown_table(stdout)
    rows = report["rows"]
    assert {(r["mode"], r["concurrency"], r["arrival"]) for r in rows} >= {
        ("direct", 1, "burst"),
        ("static", 4, "staggered"),
    }
    for row in rows:
        assert row["errors"] == 0
        assert row["throughput_rps"] > 0
        assert row["cpu_ms_per_request"] > 0
        # The service's own latency never undercuts the stages it reports.
        assert row["overhead_server_p50_ms"] >= 0
        assert row["overhead_client_p50_ms"] >= row["overhead_server_p50_ms"]
    assert set(report["targets_at_64"]) == {"default/staggered", "default/burst"}
    # Tracing off and on, HEAD's tracing beside this tree's, and two offs (the
    # noise floor), per mode; fresh services each of the two rounds.
    tracing = report["tracing"]
    compared = {(a["compare"], a["mode"]) for a in tracing["added"]}
    pairs = ("on - off", "on - on-earlier", "off-again - off")
    assert compared == {(pair, mode) for pair in pairs for mode in ("direct", "static")}
    assert tracing["rounds"] == 2
    # Tracing rounds of their own length (--tracing-duration-s), both modes by default.
    assert tracing["duration_s"] == 0.5 and tracing["modes"] == ["direct", "static"]
    # One client taking turns between the services, request by request.
    assert tracing["design"] == "interleaved"
    assert all(r["requests"] > 0 and r["errors"] == 0 for r in tracing["rows"])
    # Latency round by round: each configuration's p50 per round, and the pairs'
    # within-round differences.
    by_round = tracing["latency_p50_ms_by_round"]
    assert set(by_round) == {
        f"{c}/{m}" for c in ("off", "on", "on-earlier", "off-again") for m in ("direct", "static")
    }
    assert all(len(p50s) == 2 and min(p50s) > 0 for p50s in by_round.values())
    for added in tracing["added"]:
        new, old = added["compare"].split(" - ")
        diffs = [
            a - b
            for a, b in zip(
                by_round[f"{new}/{added['mode']}"], by_round[f"{old}/{added['mode']}"], strict=True
            )
        ]
        assert added["latency_p50_added_paired_ms"] == pytest.approx(sorted(diffs)[1], abs=1e-3)
    assert set(report["tracing"]["on_added_client_p50_le_0_3ms_by_mode"]) == {"direct", "static"}
    # Two rounds give no interval for the paired figure: no verdict either way.
    assert all(a["paired_ci"] is None for a in tracing["added"])
    assert report["tracing"]["on_added_p50_verdict_by_mode"] == {
        "direct": "undecided",
        "static": "undecided",
    }
    assert report["machine"]["cores"] >= 1


@pytest.mark.slow  # a stub model and two workers (this tree, HEAD's) as subprocesses
def test_tracing_cpu_smoke(tmp_path: Path) -> None:
    report, stdout = run_script(
        "tracing_cpu.py",
        ["--smoke", "--compare", "HEAD", "--cold-mb", "4"],
        tmp_path / "tracing_cpu.json",
        180,
    )
    markdown_table(stdout)
    # Caches evicted before each step, the writing's CPU left out (what is left of
    # every request stays above 0 below).
    assert report["cold_mb"] == 4 and "caches evicted (4 MiB written)" in stdout
    assert {(r["service"], r["mode"]) for r in report["rows"]} == {
        (service, mode) for service in ("this tree", "HEAD") for mode in ("direct", "static")
    }
    for row in report["rows"]:
        # Every request of a round counted: CPU per request, tracing off and on.
        for key in ("off_ms", "on_ms", "loop_off_ms", "loop_on_ms"):
            assert row[key] > 0, (row, key)
    assert report["machine"]["cores"] >= 1


@pytest.mark.slow  # a stub model as a subprocess
def test_otlp_encoding_smoke(tmp_path: Path) -> None:
    report, stdout = run_script("otlp_encoding.py", ["--smoke"], tmp_path / "otlp.json", 120)
    markdown_table(stdout)
    rows = {r["encoder"]: r for r in report["rows"]}
    assert set(rows) == {"sdk", "ours"}
    assert report["same_bytes"] is True and report["spans"] == 512
    assert all(r["us_per_span"] > 0 for r in rows.values())


@pytest.mark.slow  # the service and a stub model as subprocesses, for seconds
def test_resilience_tiny(tmp_path: Path) -> None:
    report, stdout = run_script(
        "resilience.py",
        ["--requests", "60", "--concurrency", "6", "--warmup", "6"],
        tmp_path / "resilience.json",
        120,
    )
    assert "throughput_rps" in stdout
    assert report["requests"] == 60
    assert report["http_500"] == 0


@pytest.mark.slow
def test_decomposer_batching_smoke(tmp_path: Path) -> None:
    report, stdout = run_script(
        "decomposer_batching.py", ["--smoke"], tmp_path / "batching.json", 400
    )
    markdown_table(stdout)
    backends = {r["backend"].split()[0] for r in report["rows"]}
    assert backends == {"vllm", "transformers"}
    assert all(r["tokens_per_s"] > 0 for r in report["rows"])
    assert set(report["speedup_tokens_per_s"]) == {"1", "2"}


def test_modes_smoke(tmp_path: Path, embedded_url: str) -> None:
    # Against the session's embedded-default service: the script's own start
    # of `python -m service serve` would be one more engine start.
    args = ["--smoke", "--url", embedded_url]
    report, stdout = run_script("modes.py", args, tmp_path / "modes.json", 400)
    assert len(markdown_table(stdout)) >= 6  # two tables
    by_mode = {r["mode"]: r for r in report["modes"]}
    assert by_mode["direct"]["solver_calls"] == 1
    assert by_mode["direct"]["decomposer_calls"] == 0
    assert by_mode["static"]["decomposer_calls"] == 1
    assert report["settings"]["service_url"] == embedded_url
    stub = {r["mode"]: r for r in report["parallel_vs_sequential"]}
    # Same calls either way. The speed-up is the script's figure to print,
    # not this test's to judge: only that it is reported.
    assert stub["static, parallel"]["solver_calls"] == stub["static, sequential"]["solver_calls"]
    assert isinstance(report["parallel_speedup"], float)


@pytest.mark.slow  # the service and a stub model as subprocesses, for seconds
def test_cold_start_smoke(tmp_path: Path) -> None:
    report, stdout = run_script("cold_start.py", ["--smoke"], tmp_path / "cold_start.json", 400)
    markdown_table(stdout)
    # --smoke starts the stub row only: the embedded start is the one every
    # slow-tier service fixture makes anyway.
    (stub,) = report["rows"]
    assert stub["service"].startswith("HTTP models only")
    assert 0 < stub["healthz_s"] <= stub["readyz_s"]
    assert stub["rss_idle_mib"] > 0 and stub["processes"] == 1
    assert stub["load_errors"] == 0 and stub["load_requests_ok"] > 0


def test_the_paired_figure_is_judged_on_its_interval() -> None:
    """``_side_by_side``: a distribution-free interval for a median over rounds, and
    a target met only when the whole interval is under it."""
    sys.path.insert(0, str(BENCH))
    try:
        from _side_by_side import median_ci, verdict
    finally:
        sys.path.remove(str(BENCH))
    eleven = [0.9, -0.1, 0.5, 0.2, 0.3, 0.0, 0.7, 0.4, 0.6, 0.1, 0.8]
    # The 3rd and 9th of 11 values: 1 - 2 * (1 + 11 + 55) / 2**11 of confidence.
    assert median_ci(eleven) == pytest.approx((0.1, 0.7, 1 - 134 / 2048))
    # Five: min and max (1 - 2 / 32); four cannot reach 90 %, even with min and max.
    assert median_ci([3.0, 1.0, 2.0, 5.0, 4.0]) == pytest.approx((1.0, 5.0, 0.9375))
    assert median_ci([1.0, 2.0, 3.0, 4.0]) is None
    assert median_ci([1.0, 2.0, 3.0, 4.0], level=0.85) == pytest.approx((1.0, 4.0, 0.875))
    # The median of ``eleven`` (0.4) is under a 0.45 target, yet its interval reaches
    # 0.7: undecided, which the median alone would hide.
    assert verdict(median_ci(eleven), 0.45) == "undecided"
    assert verdict(median_ci(eleven), 0.7) == "met"
    assert verdict(median_ci(eleven), 0.05) == "not met"
    assert verdict(None, 1.0) == "undecided"


def test_a_zero_sampling_ratio_is_measured_as_one() -> None:
    """``overhead.py --tracing-ratio 0``: a service on which no request is sampled
    (the plumbing alone), not silently no such service because 0 is falsy."""
    sys.path.insert(0, str(BENCH))
    try:
        from _tracing_cost import measured_configs, service_env
        from overhead import build_parser
    finally:
        sys.path.remove(str(BENCH))
    parser = build_parser()
    zero = parser.parse_args(["--tracing-ratio", "0", "--tracing-aa"])
    assert measured_configs(zero) == ["off", "on", "on-sampled", "off-again"]
    env = service_env("http://127.0.0.1:9", "on-sampled", zero.tracing_ratio)
    assert env["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
    assert env["OTEL_TRACES_SAMPLER_ARG"] == "0.0"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:9"
    assert "OTEL_TRACES_EXPORTER" not in env
    assert measured_configs(parser.parse_args([])) == ["off", "on"]
    assert service_env("http://127.0.0.1:9", "off")["OTEL_TRACES_EXPORTER"] == "none"


def _tracing_run(
    path: Path,
    on: list[float],
    off: list[float],
    flags: str = "avx2 avx512f",
    sampled: tuple[float, list[float]] | None = None,
) -> Path:
    """An ``overhead.py`` result file with these rounds' ``static`` p50s, as it writes
    them (only the keys ``pooled.py`` reads); ``sampled``: an ``on-sampled`` service's
    ratio and p50s."""
    by_round = {"on/static": on, "off/static": off}
    if sampled is not None:
        by_round["on-sampled/static"] = sampled[1]
    report = {
        "machine": {
            "cpu": "Test CPU",
            "cpu_generation": {"cpu family": "25", "model": "17"},
            "cpu_flags": flags,
            "date_utc": "2026-12-06 22:06",
            "git": "abc1234",
        },
        "tracing": {
            "modes": ["static"],
            "delay_s": 0.02,
            "ratio": sampled[0] if sampled else None,
            "latency_p50_ms_by_round": by_round,
        },
    }
    path.write_text(json.dumps(report))
    return path


def test_pooled_runs_are_judged_on_all_their_rounds(tmp_path: Path) -> None:
    """``pooled.py``: the within-round differences of several runs, one interval over
    all of them, where each run alone is undecided; runs on another CPU refused."""
    sys.path.insert(0, str(BENCH))
    try:
        from _side_by_side import median_ci
        from pooled import load, pool
    finally:
        sys.path.remove(str(BENCH))
    off = [90.0] * 7
    # Differences 0.31..0.37 and 0.28..0.43: each run's 7-round interval is its
    # min and max (98.4 %), which straddles 0.3 in the second.
    first = [0.31, 0.32, 0.33, 0.34, 0.35, 0.36, 0.37]
    second = [0.28, 0.36, 0.38, 0.39, 0.40, 0.41, 0.43]
    a = _tracing_run(tmp_path / "a.json", [90.0 + d for d in first], off)
    b = _tracing_run(tmp_path / "b.json", [90.0 + d for d in second], off)
    rows = pool(load([a, b], "static"), "static", 0.3)
    assert [r["run"] for r in rows] == ["a.json", "b.json", "pooled (2 runs)"]
    assert [r["rounds"] for r in rows] == [7, 7, 14]
    assert [r["verdict"] for r in rows] == ["not met", "undecided", "not met"]
    interval = median_ci(first + second)
    assert interval is not None
    low, high, level = interval
    assert rows[-1]["paired_ci"] == pytest.approx([low, high, level], abs=1e-3)
    assert low > 0.3 and level >= 0.9
    # The upper median of the 14 differences, as overhead.py takes a median.
    assert rows[-1]["latency_p50_added_paired_ms"] == pytest.approx(0.36)
    assert rows[0]["git"] == "abc1234"

    # Sampled at different ratios: two comparisons, each judged, not one pooled.
    zero = _tracing_run(tmp_path / "z.json", [90.4] * 7, off, sampled=(0.0, [90.2] * 7))
    tenth = _tracing_run(tmp_path / "t.json", [90.4] * 7, off, sampled=(0.1, [90.25] * 7))
    sampled_rows = [
        r for r in pool(load([zero, tenth], "static"), "static", 0.3) if "ratio" in r["compare"]
    ]
    assert [(r["compare"], r["run"], r["verdict"]) for r in sampled_rows] == [
        ("on-sampled (ratio 0.0) - off", "z.json", "met"),
        ("on-sampled (ratio 0.1) - off", "t.json", "met"),
    ]

    other = _tracing_run(tmp_path / "c.json", [90.5] * 7, off, flags="avx2")
    with pytest.raises(SystemExit, match="different machines"):
        load([a, other], "static")
    with pytest.raises(SystemExit, match="no direct rounds"):
        load([a], "direct")

    # The one command, as the docs give it.
    proc = subprocess.run(
        [sys.executable, str(BENCH / "pooled.py"), str(a), str(b)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    table = markdown_table(proc.stdout)
    assert any("pooled (2 runs)" in line and "not met" in line for line in table), proc.stdout


def test_avx2_emulation_caps_the_isa_probes_vllm_reads() -> None:
    """``decompose_speed.py --isa avx2``: every process sees no AVX-512, no bf16, no AMX."""
    probe = (
        "import torch, torch.cpu as c; print(c._is_avx512_supported(), "
        "c._is_avx512_bf16_supported(), c._is_amx_tile_supported(), "
        "torch.backends.cpu.get_cpu_capability())"
    )
    sys.path.insert(0, str(BENCH))
    try:
        from decompose_speed import isa_env
    finally:
        sys.path.remove(str(BENCH))
    env = {**os.environ, **isa_env("avx2")}
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False", "False", "AVX2"]
    assert isa_env("native") == {}


def test_sampling_ceiling_on_the_embedded_solver(tmp_path: Path, embedded_url: str) -> None:
    args = ["--url", embedded_url, "--problems", "2", "--samples", "2", "--concurrency", "4"]
    report, stdout = run_script("sampling_ceiling.py", args, tmp_path / "ceiling.json", 400)
    markdown_table(stdout)
    assert report["problems"] == 2 and report["samples"] == 2
    assert [len(p["samples"]) for p in report["per_problem"]] == [2, 2]
    # A right majority answer is one of the samples: maj@k never beats pass@k.
    assert report["maj_pct"] <= report["pass_pct"] <= 100
    assert report["output_tokens_per_s"] > 0
