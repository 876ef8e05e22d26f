"""Shared helpers for the benchmark scripts (not a benchmark itself).

Ports and waiting on HTTP (on ``service.cli.procs``), the machine description,
percentiles, tables, command lines and JSON results, the service and the stub
model as subprocesses, process-tree RSS and CPU. The load client is in
``_load.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

from service.cli import procs
from service.cli.procs import free_port

__all__ = ["free_port"]  # the benchmarks import it from here

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
# Independent subquestions (service/pipeline/dependencies.py puts 1-3 in one wave, 4 after).
INDEPENDENT_PLAN = (
    "1. How many apples does Tom have?\n"
    "2. How many pears does Ann buy?\n"
    "3. How many plums does Bob pick?\n"
    "4. How many fruits do they have in total?"
)


def wait_http(
    url: str, timeout_s: float = 60, proc: subprocess.Popen[bytes] | None = None
) -> float:
    """Poll until ``url`` answers 200; returns the perf_counter time it did."""
    try:
        procs.wait_until(
            lambda: httpx.get(url, timeout=2).status_code == 200,
            timeout_s=timeout_s,
            what=url,
            proc=proc,
            interval_s=0.05,
            transient=(httpx.TransportError,),
        )
    except (RuntimeError, TimeoutError) as exc:
        raise SystemExit(str(exc)) from None
    return time.perf_counter()


def git_head() -> str | None:
    """The commit of the tree measured (``ROOT``), with ``-dirty`` when its ``service``
    package differs from it; None outside a git checkout. Runs of one request path
    can then be told apart from runs of another (``pooled.py``)."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git = ["git", "-C", str(ROOT)]
        head = subprocess.run(
            [*git, "rev-parse", "--short=7", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            [*git, "status", "--porcelain", "--", "service"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return head + ("-dirty" if changed else "")
    return None


def machine() -> dict[str, Any]:
    model = platform.processor() or "unknown"
    generation: dict[str, str] = {}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            key, _, value = line.partition(":")
            if key == "Model name":
                model = value.strip()
            elif key in ("CPU family", "Model", "L3 cache"):
                generation[key.lower()] = value.strip()
    busy = [
        " ".join(p.info["cmdline"] or [])[:80]
        for p in psutil.process_iter(["cmdline"])
        if any(k in " ".join(p.info["cmdline"] or []) for k in ("train_lora", "service distill"))
    ]
    from service.embedded.hardware import NATIVE_BF16_FLAGS, read_cpu_flags

    flags = read_cpu_flags()
    simd = [f for f in ("avx2", "avx512f", *sorted(NATIVE_BF16_FLAGS)) if f in flags]
    return {
        "cpu": model,
        # A VM often names only "AMD EPYC": family and model tell its generations
        # apart (25/1 is Zen 3), which run at different speeds with the same flags.
        "cpu_generation": generation,
        # What decides the engine's speed: bf16 is native only with these flags.
        "cpu_flags": " ".join(simd) or "none of avx2/avx512f/avx512_bf16/amx_bf16",
        "cores": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
        "contention": busy,
        "git": git_head(),
    }


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A GitHub-flavoured markdown table (readable in a terminal, pasteable in docs)."""
    if not rows:
        return "(no rows)"
    cols = list(columns or rows[0].keys())

    def cell(v: Any) -> str:
        if isinstance(v, float):
            if v == 0:
                return "0"
            if abs(v) < 1:
                return f"{v:.3f}"
            return f"{v:,.2f}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)

    cells = [[cell(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    numeric = [all(isinstance(r.get(c), int | float) for r in rows) for c in cols]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)) + " |",
        "| "
        + " | ".join(
            "-" * (w - 1) + ":" if num else "-" * w for w, num in zip(widths, numeric, strict=True)
        )
        + " |",
    ]
    lines += [
        "| "
        + " | ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(row, widths, numeric, strict=True)
        )
        + " |"
        for row in cells
    ]
    return "\n".join(lines)


def arguments(doc: str) -> argparse.ArgumentParser:
    """A benchmark's parser: its docstring's first line, the rest of --help as written."""
    return argparse.ArgumentParser(
        description=doc.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )


def parse(parser: argparse.ArgumentParser, name: str, smoke: str = "") -> argparse.Namespace:
    """Adds what every benchmark takes, ``--smoke`` (a tiny run for the test suite;
    ``smoke`` says what it leaves out) and ``--out`` (``results/NAME.json``), and parses."""
    help_ = f"tiny run for the test suite{': ' + smoke if smoke else ''}"
    parser.add_argument("--smoke", action="store_true", help=help_)
    parser.add_argument("--out", default=str(RESULTS / f"{name}.json"))
    return parser.parse_args()


def write_json(path: str | Path, report: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {path}")


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    started: float  # perf_counter just before Popen
    log: Path | None = None
    ready: float = 0.0  # perf_counter when /readyz first answered 200 (``serving``)

    @property
    def ps(self) -> psutil.Process:
        return psutil.Process(self.proc.pid)

    def tree(self) -> list[psutil.Process]:
        root = self.ps
        return [root, *root.children(recursive=True)]

    def rss_mib(self) -> float:
        total = 0
        for p in self.tree():
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total / 2**20

    def cpu_s(self) -> float:
        """User + system CPU seconds of the whole process tree so far."""
        total = 0.0
        for p in self.tree():
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def stop(self) -> None:
        procs.stop(self.proc)


def start_service(env: dict[str, str], log: Path | None = None, cwd: Path = ROOT) -> Server:
    """``python -m service serve`` on a free loopback port with ``DIVCONQ_*`` ``env``.

    ``cwd`` may be a git worktree of another commit: ``python -m`` imports the
    ``service`` package from the working directory first.
    """
    port = free_port()
    full = {**os.environ, "DIVCONQ_PORT": str(port), "DIVCONQ_HOST": "127.0.0.1", **env}
    full.setdefault("DIVCONQ_LOG_LEVEL", "warning")
    # Every request runs every stage (benchmarks repeat their questions: the
    # response cache would answer them) and leaves no row in the user's ledger;
    # benchmarks/_features_cost.py turns both on to measure what they cost.
    full.setdefault("DIVCONQ_CACHE__ENABLED", "false")
    full.setdefault("DIVCONQ_LEDGER__ENABLED", "false")
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(log.open("wb")) if log else subprocess.DEVNULL
        proc = subprocess.Popen(
            [sys.executable, "-m", "service", "serve"],
            env=full,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
        )
    return Server(proc, f"http://127.0.0.1:{port}", started, log)


@contextlib.contextmanager
def service_at(ref: str | None) -> Iterator[Path]:
    """A directory whose ``service`` package is the one as of git ``ref`` (``git
    archive``, removed after), for ``start_service(cwd=...)``; None: this tree."""
    if ref is None:
        yield ROOT
        return
    with tempfile.TemporaryDirectory(prefix="divconq-baseline-") as tmp:
        archive = subprocess.run(
            ["git", "archive", ref, "service"], cwd=ROOT, check=True, capture_output=True
        )
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        yield Path(tmp)


@contextlib.contextmanager
def serving(
    env: dict[str, str], log: Path | None = None, cwd: Path = ROOT, timeout_s: float = 60
) -> Iterator[Server]:
    """``start_service``, ready (``Server.ready``) when it yields; stopped after."""
    server = start_service(env, log, cwd)
    with running(server):
        server.ready = wait_http(f"{server.url}/readyz", timeout_s=timeout_s, proc=server.proc)
        yield server


def stub_env(stub_url: str) -> dict[str, str]:
    """``DIVCONQ_*`` for a service whose decomposer and solver are the stub model
    (``stub_model``), with room for any load."""
    return {
        "DIVCONQ_MAX_IN_FLIGHT": "8192",
        "DIVCONQ_DECOMPOSER__BACKEND": "openai",
        "DIVCONQ_DECOMPOSER__BASE_URL": f"{stub_url}/v1",
        "DIVCONQ_SOLVER__BASE_URL": f"{stub_url}/v1",
        "DIVCONQ_SOLVER__MODEL": "stub",
    }


@contextlib.contextmanager
def stub_model(
    delay_s: float,
    plan: str = INDEPENDENT_PLAN,
    decomposer_delay_s: float | None = None,
    precise_timers: bool = False,
) -> Iterator[Server]:
    """``benchmarks/stub_model.py`` on a free loopback port: ready when it yields,
    stopped after. ``precise_timers``: its ``--precise-timers`` (side-by-side runs)."""
    port = free_port()
    args = [
        sys.executable,
        str(ROOT / "benchmarks" / "stub_model.py"),
        "--port",
        str(port),
        "--delay-s",
        str(delay_s),
        "--plan",
        plan,
    ]
    if decomposer_delay_s is not None:
        args += ["--decomposer-delay-s", str(decomposer_delay_s)]
    if precise_timers:
        args.append("--precise-timers")
    started = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = Server(proc, f"http://127.0.0.1:{port}", started)
    with running(server):
        wait_http(f"{server.url}/stats", proc=proc)
        yield server


@contextlib.contextmanager
def running(*servers: Server) -> Iterator[None]:
    try:
        yield
    finally:
        for s in reversed(servers):
            s.stop()
