"""Resilience benchmark: many /solve requests against a solver that fails often.

Starts ``benchmarks/flaky_solver.py`` (20% of solver calls fail with a mix of
429, 500, 503, stalls, dropped connections, malformed JSON and missing usage)
and the service (``python -m service serve``, HTTP decomposer and solver both
on the flaky server, so no model is needed), then sends N requests at C
concurrent clients in static mode (one decomposer and three solver calls
each). Prints a table and writes JSON: the status mix, whether every failure
was a JSON error with an expected status, retries, p50/p99 latency, the
service's open connections and RSS before and after.

    .venv/bin/python benchmarks/resilience.py --requests 2000 --concurrency 100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psutil
from _bench import free_port, wait_http

from service.cli.procs import stop

ROOT = Path(__file__).resolve().parent.parent
EXPECTED_ERRORS = {429, 502, 504}


def connections(proc: psutil.Process) -> int:
    return sum(1 for c in proc.net_connections(kind="tcp") if c.status == psutil.CONN_ESTABLISHED)


def metric(url: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def load(url: str, n: int, concurrency: int) -> list[tuple[int, float, bool]]:
    results: list[tuple[int, float, bool]] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def worker() -> None:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                started = time.perf_counter()
                question = f"Tom has {i} apples and buys 4 more. How many?"
                try:
                    resp = await client.post(
                        f"{url}/solve",
                        json={"question": question, "mode": "static", "max_subquestions": 3},
                    )
                except httpx.TransportError:
                    # The client's own connection failed (one the server closed
                    # under it, as an idle keep-alive): status 0, counted apart.
                    results.append((0, time.perf_counter() - started, False))
                    continue
                seconds = time.perf_counter() - started
                good_error = True
                if resp.status_code != 200:
                    try:
                        body = resp.json()
                        good_error = set(body) == {"error"} and bool(body["error"]["message"])
                    except ValueError:
                        good_error = False
                results.append((resp.status_code, seconds, good_error))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--fail-rate", type=float, default=0.2)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/resilience.json"))
    args = parser.parse_args()

    solver_port, service_port = free_port(), free_port()
    solver_url = f"http://127.0.0.1:{solver_port}"
    service_url = f"http://127.0.0.1:{service_port}"
    env = {
        **os.environ,
        "DIVCONQ_PORT": str(service_port),
        "DIVCONQ_LOG_LEVEL": "warning",
        "DIVCONQ_MAX_IN_FLIGHT": str(args.concurrency * 2),
        "DIVCONQ_DECOMPOSER__BACKEND": "openai",
        "DIVCONQ_DECOMPOSER__BASE_URL": f"{solver_url}/v1",
        "DIVCONQ_SOLVER__BASE_URL": f"{solver_url}/v1",
        "DIVCONQ_SOLVER__MODEL": "flaky",
        "DIVCONQ_SOLVER__READ_TIMEOUT_S": "1.0",
        "DIVCONQ_SOLVER__BACKOFF_BASE_S": "0.05",
        "DIVCONQ_SOLVER__BACKOFF_MAX_S": "0.5",
        "DIVCONQ_REQUEST_TIMEOUT_S": "15",
        # Every request meets the flaky solver (no cached answers), and no row
        # goes to the user's ledger.
        "DIVCONQ_CACHE__ENABLED": "false",
        "DIVCONQ_LEDGER__ENABLED": "false",
    }
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "benchmarks/flaky_solver.py"),
                "--port",
                str(solver_port),
                "--fail-rate",
                str(args.fail_rate),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            [sys.executable, "-m", "service", "serve"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
    ]
    try:
        wait_http(f"{solver_url}/stats")
        wait_http(f"{service_url}/readyz")
        service = psutil.Process(procs[1].pid)
        asyncio.run(load(service_url, args.warmup, args.concurrency))
        time.sleep(1)
        before = {"connections": connections(service), "rss_mb": service.memory_info().rss / 2**20}
        retried_before = metric(service_url, "divconq_solver_calls_total", outcome="retried")
        started = time.perf_counter()
        results = asyncio.run(load(service_url, args.requests, args.concurrency))
        wall = time.perf_counter() - started
        time.sleep(1)
        after = {"connections": connections(service), "rss_mb": service.memory_info().rss / 2**20}
        retried = (
            metric(service_url, "divconq_solver_calls_total", outcome="retried") - retried_before
        )
        faults = httpx.get(f"{solver_url}/stats").json()
    finally:
        for p in procs:
            stop(p, timeout_s=30)

    statuses = Counter(status for status, _, _ in results)
    latencies = sorted(seconds for _, seconds, _ in results)
    bad = [s for s, _, good in results if s != 200 and (not good or s not in EXPECTED_ERRORS)]
    report: dict[str, Any] = {
        "machine": f"{platform.node()} {os.cpu_count()} cores",
        "requests": args.requests,
        "concurrency": args.concurrency,
        "fail_rate": args.fail_rate,
        "wall_s": round(wall, 2),
        "throughput_rps": round(args.requests / wall, 1),
        "status_mix": dict(sorted(statuses.items())),
        "http_500": statuses.get(500, 0),
        "client_connection_errors": statuses.get(0, 0),
        "unexpected_or_non_json_errors": len(bad),
        "solver_faults_injected": faults,
        "retries": retried,
        "latency_p50_ms": round(statistics.median(latencies) * 1000, 1),
        "latency_p99_ms": round(latencies[int(0.99 * (len(latencies) - 1))] * 1000, 1),
        "connections_before": before["connections"],
        "connections_after": after["connections"],
        "rss_mb_before": round(before["rss_mb"], 1),
        "rss_mb_after": round(after["rss_mb"], 1),
        "rss_growth_pct": round(100 * (after["rss_mb"] / before["rss_mb"] - 1), 2),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    width = max(len(k) for k in report)
    for key, value in report.items():
        print(f"{key:<{width}}  {value}")
    return 0 if not bad and report["http_500"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
