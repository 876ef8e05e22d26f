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

Each round gives a p50 of the overheads ``overhead.py``'s ``measure`` reports;
the figure is the median of the rounds' p50s per configuration; added = on - off.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _bench import (
    Server,
    start_service,
    stub_env,
    stub_model,
)
from _load import KeepAliveClient
from _side_by_side import compare, rounds

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
        **stub_env(stub_url),
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


def features_cost(measure: Callable[..., Any], args: Any) -> dict[str, Any]:
    """Rows per configuration and mode, and what turning everything on adds at p50."""
    configs = ("off", "on")

    def one_client(s: Server, mode: str) -> dict[str, Any]:
        run = measure(s.url, mode, 1, args, "burst", s.cpu_s, client=FreshQuestionClient)
        row: dict[str, Any] = asyncio.run(run)
        return row

    with (
        stub_model(args.features_delay_s, precise_timers=True) as stub,
        tempfile.TemporaryDirectory(prefix="divconq-bench-ledger-") as tmp,
    ):
        samples = rounds(
            lambda: {c: start_service(_env(stub.url, c, Path(tmp))) for c in configs},
            args.features_rounds,
            one_client,
            fresh=args.fresh,
        )
    medians = ("overhead_server_p50_ms", "overhead_client_p50_ms", "cpu_ms_per_request")
    figures = compare("limits + cache miss + ledger", samples, "features", medians, [("on", "off")])
    added = figures["added"]
    met = all(a["client_p50_added_ms"] <= TARGET_ADDED_P50_MS for a in added) if added else None
    print(f"  all on adds <= {TARGET_ADDED_P50_MS} ms p50 at one client: {met}")
    return {
        "rounds": args.features_rounds,
        "delay_s": args.features_delay_s,
        **figures,
        "on_added_client_p50_le_0_5ms": met,
    }
