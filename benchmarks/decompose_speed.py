"""The default decomposer's speed, before and after hardware-aware engine settings.

Starts ``python -m service serve`` once per configuration, one after the
other on the same machine, and measures what a user sees:

- cold start: process start to ``/readyz`` 200 (the model already prepared);
- ``POST /decompose`` at 1 client (sequential requests) and at C concurrent
  clients (rounds of C at once): generated tokens per second (the responses'
  own ``completion_tokens`` over wall time) and p50 latency.

Configurations:

- ``before``: the service as of ``--before-ref`` (default ``117a45a``, the
  last commit before this change), run from a git worktree with its own
  defaults: dtype ``auto`` (the checkpoint's bf16), one OpenMP thread, the
  distilled adapter served as a LoRA;
- ``after``: this checkout's defaults (dtype by CPU flags, OpenMP bound to
  every usable CPU, the distilled weights merged, the model in the
  engine-core process);
- with ``--ablations``: ``after`` with one OpenMP thread, with the
  opposite dtype, and with vLLM's multiprocess executor, to show which
  change does what.

With ``--isa avx2`` every configuration runs on an emulated AVX2-only CPU
(``benchmarks/avx2_only/``: vLLM, ATen and oneDNN capped at AVX2, so bf16 is
emulated as it is on such CPUs), and ``after`` runs the dtype its ``auto``
resolves to there (float32). That re-takes the comparison the defaults were
made for on a machine with AVX-512; clocks, caches and memory stay this
machine's, so it is not a measurement of a real AVX2 CPU.

Every row comes from one run; the CPU model and flags are printed beside
the table. Compare only rows taken together.

    .venv/bin/python benchmarks/decompose_speed.py
    .venv/bin/python benchmarks/decompose_speed.py --ablations
    .venv/bin/python benchmarks/decompose_speed.py --isa avx2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from _bench import RESULTS, ROOT, machine, pct, serving, table

from service.embedded.hardware import resolve_dtype

DATA = ROOT / "service" / "data" / "gsm8k" / "socratic_1000.jsonl"


def questions(n: int, offset: int = 200) -> list[str]:
    lines = DATA.read_text().splitlines()[offset : offset + n]
    return [json.loads(line)["question"] for line in lines]


async def _decompose(client: httpx.AsyncClient, url: str, q: str) -> tuple[float, int]:
    started = time.perf_counter()
    resp = await client.post(f"{url}/decompose", json={"question": q}, timeout=600)
    resp.raise_for_status()
    tokens = int(resp.json()["usage"]["decomposer"]["completion_tokens"])
    return time.perf_counter() - started, tokens


async def load(url: str, qs: list[str], concurrency: int) -> dict[str, Any]:
    """Rounds of ``concurrency`` requests at once over ``qs``."""
    latencies: list[float] = []
    tokens = 0
    async with httpx.AsyncClient() as client:
        started = time.perf_counter()
        for i in range(0, len(qs), concurrency):
            batch = qs[i : i + concurrency]
            results = await asyncio.gather(*(_decompose(client, url, q) for q in batch))
            latencies += [r[0] for r in results]
            tokens += sum(r[1] for r in results)
        wall = time.perf_counter() - started
    return {
        "tokens_per_s": round(tokens / wall, 1),
        "p50_s": round(pct(latencies, 50), 2),
        "tokens_per_request": round(tokens / len(qs), 1),
    }


def measure(label: str, env: dict[str, str], cwd: Path, args: argparse.Namespace) -> dict[str, Any]:
    log = Path(tempfile.mkdtemp(prefix="decompose-speed-")) / f"{label}.log"
    env = {"DIVCONQ_LOG_LEVEL": "info", **env}
    with serving(env, log=log, cwd=cwd, timeout_s=900) as service:
        engine = httpx.get(f"{service.url}/readyz").json()["decomposer"].get("engine")
        warm = questions(2, offset=100)
        asyncio.run(load(service.url, warm, 2))
        one = asyncio.run(load(service.url, questions(args.requests_at_1), 1))
        many = asyncio.run(
            load(service.url, questions(args.rounds * args.concurrency), args.concurrency)
        )
    row = {
        "config": label,
        "engine": engine
        and f"{engine['dtype']}, OMP {engine['omp_threads_bind']}, {engine.get('executor', 'mp')}",
        "readyz_s": round(service.ready - service.started, 1),
        "tok_s_at_1": one["tokens_per_s"],
        "p50_s_at_1": one["p50_s"],
        f"tok_s_at_{args.concurrency}": many["tokens_per_s"],
        f"p50_s_at_{args.concurrency}": many["p50_s"],
        "tokens_per_request": many["tokens_per_request"],
    }
    print(json.dumps(row), flush=True)
    return row


def isa_env(isa: str) -> dict[str, str]:
    """Environment for every process of a service on an emulated ``isa`` CPU."""
    if isa == "native":
        return {}
    return {
        "PYTHONPATH": str(ROOT / "benchmarks" / "avx2_only"),
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
    }


def worktree(ref: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix="divconq-before-")) / "tree"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), ref],
        check=True,
        capture_output=True,
    )
    return path


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--before-ref", default="117a45a")
    parser.add_argument("--no-before", action="store_true", help="only this checkout")
    parser.add_argument("--ablations", action="store_true")
    parser.add_argument(
        "--isa",
        choices=("native", "avx2"),
        default="native",
        help="avx2: emulate an AVX2-only CPU (no AVX-512, no native bf16) for every row",
    )
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests-at-1", type=int, default=6)
    parser.add_argument("--out", help="JSON results (default: results/decompose_speed[_ISA].json)")
    args = parser.parse_args()

    host = machine()
    host["emulated_isa"] = args.isa
    print(json.dumps(host), flush=True)
    emulate = isa_env(args.isa)
    # What the service's dtype "auto" picks on the emulated CPU; the service
    # itself reads the real /proc/cpuinfo, so it is passed explicitly.
    after_env = {**emulate}
    if args.isa == "avx2":
        after_env["DIVCONQ_DECOMPOSER__DTYPE"] = resolve_dtype("auto", {"avx2"})
    rows = []
    if not args.no_before:
        tree = worktree(args.before_ref)
        try:
            rows.append(measure(f"before ({args.before_ref})", emulate, tree, args))
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False
            )
    rows.append(measure("after", after_env, ROOT, args))
    if args.ablations:
        one_thread = {**after_env, "DIVCONQ_DECOMPOSER__OMP_THREADS_BIND": "0"}
        rows.append(measure("after, one OMP thread", one_thread, ROOT, args))
        other = "float32" if "bfloat16" in str(rows[-2]["engine"]) else "bfloat16"
        other_dtype = {**after_env, "DIVCONQ_DECOMPOSER__DTYPE": other}
        rows.append(measure(f"after, {other}", other_dtype, ROOT, args))
        # vLLM's CPU default: the model in a worker process of its own.
        executor_mp = {**after_env, "DIVCONQ_DECOMPOSER__EXECUTOR": "mp"}
        rows.append(measure("after, executor mp", executor_mp, ROOT, args))
    isa = f"; emulated ISA: {args.isa}" if args.isa != "native" else ""
    print(f"\n{host['cpu']} ({host['cpu_flags']}{isa}), {host['cores']} cores\n")
    print(table(rows))
    base = rows[0]
    if len(rows) > 1 and not args.no_before:
        after = rows[1]
        c = args.concurrency
        print(
            f"\nafter/before at {c}: "
            f"{after[f'tok_s_at_{c}'] / base[f'tok_s_at_{c}']:.1f}x tokens/s, "
            f"p50 {base[f'p50_s_at_{c}'] / after[f'p50_s_at_{c}']:.1f}x lower"
        )
    suffix = "" if args.isa == "native" else f"_{args.isa}"
    out = Path(args.out or RESULTS / f"decompose_speed{suffix}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": host, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
