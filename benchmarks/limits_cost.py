"""What per-key limits cost one request: admission and settlement, measured alone.

The service's limits step (``service.tenancy.limiter.Limiter``) for one key
with all three limits, in the configurations a deployment can pick:

- ``off``: ``DIVCONQ_LIMITS__ENABLED=false`` (nothing counted);
- ``memory``: the in-process store (one replica);
- ``redis``: a real ``redis-server`` on a Unix socket on this machine, one Lua
  script per step (a managed Redis adds its network round trip to ``admit``).

Per request: ``admit`` (on the request's path, before any model call) and
``settle`` (after the response has been sent). Configurations run in
alternating rounds so drift on a shared machine hits each alike; the figure
is the median of the rounds' p50s, in microseconds.

    .venv/bin/python benchmarks/limits_cost.py
    .venv/bin/python benchmarks/limits_cost.py --smoke
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from _bench import arguments, machine, parse, pct, table, write_json

from service.cli import procs
from service.core.keys import ApiKey
from service.core.settings import Settings
from service.core.spend import Spend
from service.observability.metrics import Metrics
from service.tenancy.limiter import Limiter
from service.tenancy.redis_store import RedisStore, check_reachable, connect
from service.tenancy.store import LimitStore, MemoryStore

# High enough that nothing is refused: every request takes the whole path.
KEY = ApiKey(
    name="bench",
    key="sk-bench",
    requests_per_minute=10**9,
    tokens_per_minute=10**12,
    usd_per_day=10.0**9,
)


async def _round(limiter: Limiter, n: int) -> tuple[list[float], list[float]]:
    admit_us, settle_us = [], []
    spend = Spend(tokens=120, cost_usd=0.0002, calls=2)
    for _ in range(n):
        t0 = time.perf_counter()
        ticket = await limiter.admit(KEY, 3000)
        t1 = time.perf_counter()
        await limiter.settle(ticket, spend)
        t2 = time.perf_counter()
        admit_us.append((t1 - t0) * 1e6)
        settle_us.append((t2 - t1) * 1e6)
    return admit_us, settle_us


def _limiter(store: LimitStore, enabled: bool) -> Limiter:
    settings = Settings(limits={"enabled": enabled})
    return Limiter(settings, store, Metrics())


async def _measure(url: str, rounds: int, n: int) -> list[dict[str, Any]]:
    redis_store = RedisStore(connect(url, 1.0), "bench:limits")
    limiters = {
        "off": _limiter(MemoryStore(), enabled=False),
        "memory": _limiter(MemoryStore(), enabled=True),
        "redis": _limiter(redis_store, enabled=True),
    }
    for limiter in limiters.values():  # warm-up: connections, the scripts loaded
        await _round(limiter, 50)
    p50s: dict[str, dict[str, list[float]]] = {c: {"admit": [], "settle": []} for c in limiters}
    p99s: dict[str, list[float]] = {c: [] for c in limiters}
    for _ in range(rounds):
        for config, limiter in limiters.items():
            admit, settle = await _round(limiter, n)
            p50s[config]["admit"].append(pct(admit, 50))
            p50s[config]["settle"].append(pct(settle, 50))
            p99s[config].append(pct(admit, 99))
    await redis_store.aclose()
    return [
        {
            "config": config,
            "requests": rounds * n,
            "admit_p50_us": round(pct(p50s[config]["admit"], 50), 1),
            "admit_p99_us": round(pct(p99s[config], 50), 1),
            "settle_p50_us": round(pct(p50s[config]["settle"], 50), 1),
        }
        for config in limiters
    ]


def main() -> int:
    parser = arguments(__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=2000, help="per round and config")
    args = parse(parser, "limits_cost")
    if args.smoke:
        args.rounds, args.requests = 2, 50
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (scripts/system-packages.txt)")
    with tempfile.TemporaryDirectory(prefix="divconq-bench-redis-") as tmp:
        sock = Path(tmp) / "redis.sock"
        args_ = [binary, "--port", "0", "--unixsocket", str(sock), "--save", "", "--dir", tmp]
        server = subprocess.Popen(args_, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        url = f"unix://{sock}"
        try:
            procs.wait_until(
                lambda: sock.exists() and check_reachable(url, 1.0) is None,
                timeout_s=30,
                what="redis-server",
                proc=server,
            )
            rows = asyncio.run(_measure(url, args.rounds, args.requests))
        finally:
            procs.stop(server)
    print(table(rows, list(rows[0])))
    report = {
        "benchmark": "limits_cost",
        "machine": machine(),
        "settings": {"rounds": args.rounds, "requests_per_round": args.requests},
        "rows": rows,
    }
    write_json(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
