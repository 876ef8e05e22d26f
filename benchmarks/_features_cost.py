"""What per-key limits, a response-cache miss and the request ledger cost a request,
for ``benchmarks/overhead.py``: all on vs all off, side by side at one client.

Two services on one stub model, measured in alternating rounds at one client
(drift on a shared machine hits both alike):

- ``off``: an API key without limits, the cache off, the ledger off;
- ``on``: the same key with a requests/minute, tokens/minute and USD/day
  limit (none ever reached; counted in process, the single-node default),
  the response cache on and missing every time (each request's question is
  new: one lookup at the request and one per solver call, then the writes),
  and the ledger on (a row per request to SQLite in a temporary directory).

Each round gives a p50 of the overheads ``summarise`` reports; the figure is
the median of the rounds' p50s per configuration; added = on - off.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _bench import (
    INDEPENDENT_PLAN,
    KeepAliveClient,
    closed_loop,
    running,
    start_service,
    start_stub,
    table,
    wait_http,
)

TARGET_ADDED_P50_MS = 0.5
KEY = "sk-bench-features"
_fresh = itertools.count()


class FreshQuestionClient(KeepAliveClient):
    """Sends the bench key, and makes every question new (so the cache always misses)."""

    extra_headers = f"authorization: Bearer {KEY}\r\n".encode()

    async def post(self, path: str, payload: bytes) -> tuple[int, bytes]:
        body = json.loads(payload)
        body["question"] = f"{body['question']} (#{next(_fresh)})"
        return await super().post(path, json.dumps(body).encode())


def _env(stub_url: str, config: str, ledger_dir: Path) -> dict[str, str]:
    key: dict[str, Any] = {"name": "bench", "key": KEY}
    env = {
        "DIVCONQ_MAX_IN_FLIGHT": "8192",
        "DIVCONQ_DECOMPOSER__BACKEND": "openai",
        "DIVCONQ_DECOMPOSER__BASE_URL": f"{stub_url}/v1",
        "DIVCONQ_SOLVER__BASE_URL": f"{stub_url}/v1",
        "DIVCONQ_SOLVER__MODEL": "stub",
        "DIVCONQ_PRICES": json.dumps({"stub": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}),
        "OTEL_TRACES_EXPORTER": "none",
    }
    if config == "off":
        env |= {"DIVCONQ_CACHE__ENABLED": "false", "DIVCONQ_LEDGER__ENABLED": "false"}
    else:
        key |= {"requests_per_minute": 10**9, "tokens_per_minute": 10**12, "usd_per_day": 1e9}
        env |= {
            "DIVCONQ_CACHE__ENABLED": "true",
            "DIVCONQ_LEDGER__ENABLED": "true",
            "DIVCONQ_LEDGER_URL": f"sqlite:///{ledger_dir / 'ledger.sqlite3'}",
        }
    return env | {"DIVCONQ_API_KEYS": json.dumps([key])}


def _p50(values: list[float]) -> float:
    values = sorted(values)
    return values[len(values) // 2] if values else float("nan")


async def _one_client(
    url: str, mode: str, args: Any, cpu: Callable[[], float], summarise: Callable[..., Any]
) -> dict[str, Any]:
    payloads = [
        {"question": q, "mode": mode, "max_subquestions": 4} for q in args.feature_questions
    ]
    loop = asyncio.create_task(
        closed_loop(
            url,
            "/solve",
            payloads,
            1,
            duration_s=args.warmup_s + args.duration_s,
            client=FreshQuestionClient,
        )
    )
    await asyncio.sleep(args.warmup_s)
    begin, before = time.perf_counter(), cpu()
    results, _ = await loop
    used, wall = cpu() - before, time.perf_counter() - begin
    done = [r for r in results if r.started + r.seconds >= begin]
    row: dict[str, Any] = summarise(mode, 1, done, wall, used)
    return row


def features_cost(summarise: Callable[..., Any], args: Any) -> dict[str, Any]:
    """Rows per configuration and mode, and what turning everything on adds at p50."""
    configs = ("off", "on")
    stub = start_stub(args.features_delay_s, INDEPENDENT_PLAN)
    with running(stub), tempfile.TemporaryDirectory(prefix="divconq-bench-ledger-") as tmp:
        services = {c: start_service(_env(stub.url, c, Path(tmp))) for c in configs}
        with running(*services.values()):
            for s in services.values():
                wait_http(f"{s.url}/readyz", proc=s.proc)
            samples: dict[tuple[str, str], list[dict[str, Any]]] = {}
            for _ in range(args.features_rounds):
                for mode in ("direct", "static"):
                    for c in configs:
                        s = services[c]
                        row = asyncio.run(_one_client(s.url, mode, args, s.cpu_s, summarise))
                        samples.setdefault((c, mode), []).append(row)
    rows = []
    medians = ("overhead_server_p50_ms", "overhead_client_p50_ms", "cpu_ms_per_request")
    for (config, mode), got in samples.items():
        rows.append(
            {
                "features": config,
                "mode": mode,
                "requests": sum(r["requests"] for r in got),
                "errors": sum(r["errors"] for r in got),
                **{k: round(_p50([r[k] for r in got]), 3) for k in medians},
            }
        )
    by = {(r["features"], r["mode"]): r for r in rows}
    added = [
        {
            "compare": "on - off",
            "mode": mode,
            "server_p50_added_ms": round(
                by[("on", mode)]["overhead_server_p50_ms"]
                - by[("off", mode)]["overhead_server_p50_ms"],
                3,
            ),
            "client_p50_added_ms": round(
                by[("on", mode)]["overhead_client_p50_ms"]
                - by[("off", mode)]["overhead_client_p50_ms"],
                3,
            ),
            "cpu_ms_per_request_added": round(
                by[("on", mode)]["cpu_ms_per_request"] - by[("off", mode)]["cpu_ms_per_request"],
                3,
            ),
        }
        for mode in ("direct", "static")
        if ("on", mode) in by and ("off", mode) in by
    ]
    met = all(a["client_p50_added_ms"] <= TARGET_ADDED_P50_MS for a in added) if added else None
    print("\nlimits + cache miss + ledger, one client (median of the rounds' p50s, ms):")
    print(table(rows, list(rows[0])))
    print(table(added, list(added[0])))
    print(f"  all on adds <= {TARGET_ADDED_P50_MS} ms p50 at one client: {met}")
    return {
        "rounds": args.features_rounds,
        "delay_s": args.features_delay_s,
        "rows": rows,
        "added": added,
        "on_added_client_p50_le_0_5ms": met,
    }
