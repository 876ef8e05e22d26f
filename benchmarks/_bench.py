"""Shared helpers for the benchmark scripts (not a benchmark itself).

Ports and waiting on HTTP (on ``service.cli.procs``), the machine description,
percentiles, tables, JSON results, the service as a subprocess, process-tree
RSS and CPU, and a small keep-alive HTTP/1.1 load client cheap enough not to
starve the service of CPU on a 2-core box (httpx costs several times more per
request).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
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


def start_stub(delay_s: float, plan: str, decomposer_delay_s: float | None = None) -> Server:
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
    started = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = Server(proc, f"http://127.0.0.1:{port}", started)
    wait_http(f"{server.url}/stats", proc=proc)
    return server


@contextlib.contextmanager
def running(*servers: Server) -> Iterator[None]:
    try:
        yield
    finally:
        for s in reversed(servers):
            s.stop()


# --- a lean load client -------------------------------------------------------------


@dataclass
class Result:
    status: int
    seconds: float
    body: dict[str, Any] | None
    started: float = 0.0  # perf_counter() when the request was sent


class KeepAliveClient:
    """One HTTP/1.1 keep-alive connection; POSTs JSON, reads Content-Length bodies."""

    # More request header lines (b"name: value\r\n" each), for subclasses: a key, say.
    extra_headers = b""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self._reader, self._writer

    async def _send(
        self, path: str, payload: bytes
    ) -> tuple[asyncio.StreamReader, int, dict[bytes, bytes]]:
        """POST ``payload``; returns the reader (at the body), the status and the
        headers (names lower-cased)."""
        reader, writer = await self._connect()
        writer.write(
            f"POST {path} HTTP/1.1\r\nhost: {self.host}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(payload)}\r\n".encode()
            + self.extra_headers
            + b"\r\n"
            + payload
        )
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(b":") for line in lines[1:] if line)
        }
        return reader, status, headers

    async def post(self, path: str, payload: bytes) -> tuple[int, bytes]:
        reader, status, headers = await self._send(path, payload)
        length = int(headers.get(b"content-length", b"0"))
        body = await reader.readexactly(length) if length else b""
        if headers.get(b"connection", b"").lower() == b"close":
            self.close()
        return status, body

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


async def closed_loop(
    url: str,
    path: str,
    payloads: Sequence[dict[str, Any]],
    concurrency: int,
    *,
    duration_s: float | None = None,
    total: int | None = None,
    stagger_s: float = 0.0,
    client: Callable[[str, int], KeepAliveClient] = KeepAliveClient,
) -> tuple[list[Result], float]:
    """``concurrency`` clients, each sending its next request when the last returns.

    Runs for ``duration_s`` seconds, or until ``total`` requests were sent.
    ``stagger_s`` spreads the clients' first requests evenly over that many
    seconds; without it every client starts at once, and against a server
    with a fixed answer time they stay in lockstep, arriving as one burst per
    cycle. ``client`` makes each worker's connection (a streaming reader, say).
    Returns every result and the wall time.
    """
    host, port = url.removeprefix("http://").split(":")
    bodies = [json.dumps(p).encode() for p in payloads]
    results: list[Result] = []
    sent = 0
    started = time.perf_counter()
    stop_at = started + duration_s if duration_s is not None else float("inf")

    async def worker(k: int) -> None:
        nonlocal sent
        conn = client(host, int(port))
        await asyncio.sleep(stagger_s * k / concurrency)
        try:
            while time.perf_counter() < stop_at and (total is None or sent < total):
                body = bodies[sent % len(bodies)]
                sent += 1
                t0 = time.perf_counter()
                try:
                    status, raw = await conn.post(path, body)
                except (OSError, asyncio.IncompleteReadError):
                    conn.close()
                    results.append(Result(0, time.perf_counter() - t0, None, t0))
                    continue
                seconds = time.perf_counter() - t0
                parsed = json.loads(raw) if raw else None
                results.append(Result(status, seconds, parsed, t0))
        finally:
            conn.close()

    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return results, time.perf_counter() - started
