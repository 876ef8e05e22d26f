"""Mode cost and latency: solver calls, tokens and wall time per mode.

Part 1, the real model: the service as ``python -m service serve`` with its
defaults (the in-process vLLM decomposer, and the embedded model as the
solver over the service's own ``/v1``), the same GSM8K problems in every
mode, one request at a time. Per mode: decomposer and solver calls, tokens
by stage, wall time p50 and mean, and the solver's cost at a hosted price
(``--solver-price``, USD per million input/output tokens; the decomposer
runs locally and is counted free).

Part 2, parallel against sequential solving in ``static`` mode: a stub
decomposer (``benchmarks/stub_model.py``) always plans four subquestions,
three of them independent, and a stub solver answers after a fixed delay;
the service runs once with ``DIVCONQ_PARALLEL_SUBQUESTIONS=true`` and once
with ``false``. The real model's plans mostly chain (each step uses the
last), so the stub shows what parallel waves can save.

    .venv/bin/python benchmarks/modes.py
    .venv/bin/python benchmarks/modes.py --url http://127.0.0.1:8000  # a running service
    .venv/bin/python benchmarks/modes.py --smoke
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from _bench import (
    INDEPENDENT_PLAN,
    ROOT,
    arguments,
    machine,
    parse,
    pct,
    serving,
    stub_env,
    stub_model,
    table,
    write_json,
)

DATA = ROOT / "service" / "data" / "gsm8k" / "socratic_1000.jsonl"


def problems(n: int, offset: int = 100) -> list[str]:
    lines = DATA.read_text().splitlines()[offset : offset + n]
    return [json.loads(line)["question"] for line in lines]


def solve_all(url: str, questions: list[str], mode: str) -> list[tuple[float, dict[str, Any]]]:
    out = []
    with httpx.Client(timeout=900) as client:
        for q in questions:
            started = time.perf_counter()
            resp = client.post(f"{url}/solve", json={"question": q, "mode": mode})
            seconds = time.perf_counter() - started
            if resp.status_code != 200:
                raise SystemExit(f"{mode}: HTTP {resp.status_code}: {resp.text[:300]}")
            out.append((seconds, resp.json()))
    return out


def summarise(
    label: str, results: list[tuple[float, dict[str, Any]]], price: tuple[float, float]
) -> dict[str, Any]:
    def mean(values: list[float]) -> float:
        return round(statistics.fmean(values), 1) if values else 0.0

    dec = [r["usage"]["decomposer"] for _, r in results]
    sol = [r["usage"]["solver"] for _, r in results]
    wall = [s for s, _ in results]
    solver_cost = [
        (u["prompt_tokens"] * price[0] + u["completion_tokens"] * price[1]) / 1e6 for u in sol
    ]
    return {
        "mode": label,
        "problems": len(results),
        "subquestions": mean([len(r["subquestions"]) for _, r in results]),
        "decomposer_calls": mean([u["calls"] for u in dec]),
        "solver_calls": mean([u["calls"] for u in sol]),
        "decomposer_tokens_in": mean([u["prompt_tokens"] for u in dec]),
        "decomposer_tokens_out": mean([u["completion_tokens"] for u in dec]),
        "solver_tokens_in": mean([u["prompt_tokens"] for u in sol]),
        "solver_tokens_out": mean([u["completion_tokens"] for u in sol]),
        "decomposer_s": round(statistics.fmean(u["latency_ms"] for u in dec) / 1000, 2),
        "solver_s": round(statistics.fmean(u["latency_ms"] for u in sol) / 1000, 2),
        "wall_p50_s": round(pct(wall, 50), 2),
        "wall_mean_s": round(statistics.fmean(wall), 2),
        "solver_usd_per_1k": round(1000 * statistics.fmean(solver_cost), 4),
    }


def measure_modes(
    url: str, args: argparse.Namespace
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    questions = problems(args.problems)
    solve_all(url, problems(1, offset=0), "direct")  # warm-up
    rows = []
    for mode in args.modes.split(","):
        rows.append(summarise(mode, solve_all(url, questions, mode), args.price))
        print(f"  {rows[-1]}", flush=True)
    config = httpx.get(f"{url}/readyz").json()
    return rows, {
        "decomposer": config["decomposer"]["model"],
        "solver": config["solvers"]["default"]["model"],
        "solver_base_url": config["solvers"]["default"]["base_url"],
    }


def real_model(args: argparse.Namespace, logs: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    if args.url:
        return measure_modes(args.url, args)
    env = {"DIVCONQ_MAX_IN_FLIGHT": "64"}
    if args.smoke:
        env |= {"DIVCONQ_SOLVER__MAX_TOKENS": "8", "DIVCONQ_DECOMPOSER__MAX_TOKENS": "24"}
    with serving(env, log=logs / "modes-service.log", timeout_s=900) as service:
        print(f"  service ready in {service.ready - service.started:.1f} s", flush=True)
        return measure_modes(service.url, args)


def parallel_vs_sequential(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    with stub_model(args.stub_delay_s) as stub:
        for parallel in (True, False):
            env = {**stub_env(stub.url), "DIVCONQ_PARALLEL_SUBQUESTIONS": str(parallel).lower()}
            with serving(env) as service:
                questions = problems(args.stub_requests)
                solve_all(service.url, questions[:1], "static")  # warm-up
                label = "static, parallel" if parallel else "static, sequential"
                rows.append(summarise(label, solve_all(service.url, questions, "static"), (0, 0)))
                print(f"  {rows[-1]}", flush=True)
    return rows


def main() -> int:
    parser = arguments(__doc__)
    parser.add_argument("--problems", type=int, default=10, help="GSM8K problems per mode")
    parser.add_argument("--modes", default="direct,hinted,static,socratic")
    parser.add_argument(
        "--solver-price",
        default="0.15,0.60",
        help="hosted solver price, USD per million input,output tokens (gpt-4o-mini list)",
    )
    parser.add_argument("--stub-delay-s", type=float, default=0.5, help="stub solver delay")
    parser.add_argument("--stub-requests", type=int, default=10)
    parser.add_argument(
        "--url",
        help="measure this running service (e.g. a deployment) instead of starting "
        "`python -m service serve` with its defaults",
    )
    args = parse(parser, "modes")
    if args.smoke:
        args.problems, args.modes = 1, "direct,static"
        args.stub_delay_s, args.stub_requests = 0.05, 2
    p_in, p_out = (float(x) for x in args.solver_price.split(","))
    args.price = (p_in, p_out)

    info = machine()
    with tempfile.TemporaryDirectory(prefix="divconq-bench-") as tmp:
        real_rows, models = real_model(args, Path(tmp))
    stub_rows = parallel_vs_sequential(args)
    seq = next(r for r in stub_rows if r["mode"].endswith("sequential"))
    par = next(r for r in stub_rows if r["mode"].endswith("parallel"))
    report = {
        "benchmark": "modes",
        "machine": info,
        "settings": {
            "problems": args.problems,
            "service_url": args.url,
            "models": models,
            "solver_price_usd_per_mtok": {"input": p_in, "output": p_out},
            "stub_delay_s": args.stub_delay_s,
            "stub_requests": args.stub_requests,
            "stub_plan": INDEPENDENT_PLAN.splitlines(),
        },
        "modes": real_rows,
        "parallel_vs_sequential": stub_rows,
        "parallel_speedup": round(seq["wall_p50_s"] / par["wall_p50_s"], 2)
        if par["wall_p50_s"]
        else None,
    }
    columns = [
        "mode",
        "problems",
        "subquestions",
        "decomposer_calls",
        "solver_calls",
        "decomposer_tokens_in",
        "decomposer_tokens_out",
        "solver_tokens_in",
        "solver_tokens_out",
        "decomposer_s",
        "solver_s",
        "wall_p50_s",
        "wall_mean_s",
        "solver_usd_per_1k",
    ]
    print(f"\nreal model ({models['decomposer']} decomposer, {models['solver']} solver):")
    print(table(real_rows, columns))
    print(f"\nstatic with a stub solver ({args.stub_delay_s} s per call):")
    print(table(stub_rows, ["mode", "problems", "solver_calls", "wall_p50_s", "wall_mean_s"]))
    print(f"\nparallel speed-up (p50 wall): {report['parallel_speedup']}x")
    write_json(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
