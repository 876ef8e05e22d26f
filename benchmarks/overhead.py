"""Orchestration overhead: what the service adds on top of its model calls.

Starts ``benchmarks/stub_model.py`` (an OpenAI-shaped decomposer and solver
that answer after a fixed delay) and the service (``python -m service
serve``, ``openai`` decomposer backend on the stub, so no model is needed),
then runs closed-loop clients at each concurrency level in ``direct`` mode
(one solver call) and ``static`` mode with a fixed plan of four
subquestions (one decomposer call, then the solver: three independent
subquestions in one parallel wave, the fourth, the final answer: five calls),
and ``static-stream``: the same ``static`` request with ``"stream": true``,
read as server-sent events to the last (``done``) event.

Then what tracing costs (``benchmarks/_tracing_cost.py``): services with
tracing off and on (the SDK's batch processor exporting over OTLP/HTTP to a
local sink), optionally one from before tracing existed
(``--tracing-baseline REF``) and one with an earlier tracing implementation
on (``--tracing-compare REF``), measured side by side at one client. And what
per-key limits, a response-cache miss and the request ledger cost
(``benchmarks/_features_cost.py``): all on vs all off, side by side at one
client (target: at most 0.5 ms p50 added).

Per request it takes the stage latencies the response reports
(``usage.decomposer.latency_ms + usage.solver.latency_ms``; streamed: the
``usage`` event, and ``latency_ms`` from the ``done`` event) and reports two
overheads:

- server: the response's own ``latency_ms`` minus the stage sum - pure
  orchestration inside the pipeline (prompts, parsing, accounting);
- client: the latency the client measured minus the stage sum - adds HTTP
  parsing, routing, validation, serialisation and event-loop queueing.

Also: throughput and the service's CPU time per request (psutil). The client
is a lean keep-alive HTTP/1.1 client; client, stub and service share the
machine's cores.

    .venv/bin/python benchmarks/overhead.py
    .venv/bin/python benchmarks/overhead.py --smoke
    .venv/bin/python benchmarks/overhead.py --concurrency 1 --modes static --limits default \
        --arrivals burst --tracing-baseline 036eb06~1 --tracing-ratio 0.1 --tracing-compare main
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from _bench import (
    INDEPENDENT_PLAN,
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
from _features_cost import features_cost
from _load import KeepAliveClient, Result, closed_loop, interleaved_loop
from _tracing_cost import tracing_cost

QUESTIONS = [
    "Tom has 3 apples, Ann buys 4 pears and Bob picks 5 plums. How many fruits do they have?",
    "A pen costs $3. How much do 4 pens cost?",
    "Zoe has 12 stickers. She buys 3 packs of 5 stickers and gives 7 away. How many are left?",
    "A train travels 60 miles per hour for 3 hours. How far does it go?",
]


def summarise(
    mode: str, concurrency: int, results: list[Result], wall: float, cpu_s: float
) -> dict[str, Any]:
    ok = [r for r in results if r.status == 200 and r.body is not None]
    client_ms, server_ms, stage_ms, over_client, over_server = [], [], [], [], []
    for r in ok:
        assert r.body is not None
        usage = r.body["usage"]
        stages = usage["decomposer"]["latency_ms"] + usage["solver"]["latency_ms"]
        c = r.seconds * 1000.0
        client_ms.append(c)
        server_ms.append(r.body["latency_ms"])
        stage_ms.append(stages)
        over_client.append(c - stages)
        over_server.append(r.body["latency_ms"] - stages)
    n = len(ok)
    return {
        "mode": mode,
        "concurrency": concurrency,
        "requests": len(results),
        "errors": len(results) - n,
        "throughput_rps": round(n / wall, 1) if wall else 0.0,
        "latency_p50_ms": round(pct(client_ms, 50), 2),
        "stage_sum_p50_ms": round(pct(stage_ms, 50), 2),
        "overhead_server_p50_ms": round(pct(over_server, 50), 3),
        "overhead_server_p99_ms": round(pct(over_server, 99), 3),
        "overhead_client_p50_ms": round(pct(over_client, 50), 2),
        "overhead_client_p99_ms": round(pct(over_client, 99), 2),
        "overhead_client_mean_ms": round(statistics.fmean(over_client), 2) if n else 0.0,
        "cpu_ms_per_request": round(cpu_s * 1000.0 / n, 3) if n else 0.0,
    }


STREAMED = "-stream"


def payloads(mode: str) -> list[dict[str, Any]]:
    base = mode.removesuffix(STREAMED)
    extra = {"stream": True} if mode.endswith(STREAMED) else {}
    return [{"question": q, "mode": base, "max_subquestions": 4, **extra} for q in QUESTIONS]


# Model calls in series per request (stub plan): the length of one client cycle.
SERIAL_STAGES = {"direct": 1, "static": 4, "static-stream": 4}


class StreamingClient(KeepAliveClient):
    """Reads a streamed /solve (chunked ``text/event-stream``) to its ``done`` event.

    Returns, as the body, what the non-streamed response would say of the
    figures measured here: ``usage`` (its event) and ``latency_ms`` (``done``'s).
    The client's latency is the time to the last event.
    """

    async def post(self, path: str, payload: bytes) -> tuple[int, bytes]:
        reader, status, headers = await self._send(path, payload)
        if headers.get(b"transfer-encoding") == b"chunked":
            chunks = []
            while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
                chunks.append((await reader.readexactly(size + 2))[:-2])
            await reader.readuntil(b"\r\n")
            raw = b"".join(chunks)
        else:
            raw = await reader.readexactly(int(headers.get(b"content-length", b"0")))
        if status != 200 or not headers.get(b"content-type", b"").startswith(b"text/event"):
            return status, raw
        body: dict[str, Any] = {}
        for event in raw.split(b"\n\n"):
            fields = dict(line.split(b": ", 1) for line in event.split(b"\n") if b": " in line)
            data = json.loads(fields.get(b"data", b"null"))
            if fields.get(b"event") == b"usage":
                body["usage"] = data
            elif fields.get(b"event") == b"done":
                body["latency_ms"] = data["latency_ms"]
            elif fields.get(b"event") == b"error":
                return 502, json.dumps(data).encode()
        return status, json.dumps(body).encode()


async def measure(
    url: str,
    mode: str,
    concurrency: int,
    args: argparse.Namespace,
    arrival: str,
    cpu: Callable[[], float],
    client: type[KeepAliveClient] | None = None,
) -> dict[str, Any]:
    """One closed loop: warm-up, then ``duration_s`` measured; ``client`` in place of
    the one ``mode`` takes.

    Measured: the requests that finished after the warm-up (at high
    concurrency with the shipped limits a request can outlast the window, so
    counting those sent after it would leave nothing to measure).
    """
    stagger = args.delay_s * SERIAL_STAGES[mode] if arrival == "staggered" else 0.0
    loop = asyncio.create_task(
        closed_loop(
            url,
            "/solve",
            payloads(mode),
            concurrency,
            duration_s=args.warmup_s + args.duration_s,
            stagger_s=stagger,
            client=client or (StreamingClient if mode.endswith(STREAMED) else KeepAliveClient),
        )
    )
    await asyncio.sleep(args.warmup_s)
    begin, before = time.perf_counter(), cpu()
    results, _ = await loop
    used, wall = cpu() - before, time.perf_counter() - begin
    done = [r for r in results if r.started + r.seconds >= begin]
    return summarise(mode, concurrency, done, wall, used)


async def measure_interleaved(
    servers: dict[str, Any], mode: str, args: argparse.Namespace, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """One client taking turns between ``servers`` (``_bench.Server`` by configuration):
    warm-up, then ``duration_s`` measured; a ``summarise`` row per configuration.

    Measured as ``measure`` measures: the requests that finished after the
    warm-up, and each service's CPU from then on.
    """
    if mode.endswith(STREAMED):
        raise ValueError("interleaved rounds read whole responses: no streamed mode")
    urls = {name: s.url for name, s in servers.items()}
    loop = asyncio.create_task(
        interleaved_loop(
            urls, "/solve", payloads(mode), duration_s=args.warmup_s + args.duration_s, seed=seed
        )
    )
    await asyncio.sleep(args.warmup_s)
    begin = time.perf_counter()
    before = {name: s.cpu_s() for name, s in servers.items()}
    results, _ = await loop
    wall = time.perf_counter() - begin
    rows = {}
    for name, s in servers.items():
        done = [r for r in results[name] if r.started + r.seconds >= begin]
        rows[name] = summarise(mode, 1, done, wall, s.cpu_s() - before[name])
    return rows


CONFIGS = {
    # The service's own defaults for the solver: 32 calls in flight, a pool of 100.
    "default": {},
    # No call waits in the service's own limits (that wait would be counted in
    # the stage latency, not the overhead).
    "raised": {
        "DIVCONQ_SOLVER__MAX_CONCURRENCY": "4096",
        "DIVCONQ_SOLVER__MAX_CONNECTIONS": "4096",
    },
}


def run_config(limits: str, stub_url: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    env = {
        **stub_env(stub_url),
        # Every request runs every stage (the same questions repeat: the cache
        # would answer them), and the ledger records nothing of the benchmark's.
        "DIVCONQ_CACHE__ENABLED": "false",
        "DIVCONQ_LEDGER__ENABLED": "false",
        **CONFIGS[limits],
    }
    rows = []
    with serving(env) as service:
        for arrival in args.arrivals.split(","):
            for mode in args.modes.split(","):
                for c in args.levels:
                    row = asyncio.run(measure(service.url, mode, c, args, arrival, service.cpu_s))
                    rows.append({"limits": limits, "arrival": arrival, **row})
                    _print_row(rows[-1])
    return rows


def _print_row(row: dict[str, Any]) -> None:
    print(
        f"  {row['limits']}/{row['arrival']} {row['mode']:>6} c={row['concurrency']:<4} "
        f"{row['throughput_rps']:>7} rps  "
        f"server p50/p99 {row['overhead_server_p50_ms']}/"
        f"{row['overhead_server_p99_ms']} ms  client p50/p99 "
        f"{row['overhead_client_p50_ms']}/{row['overhead_client_p99_ms']} ms  "
        f"cpu {row['cpu_ms_per_request']} ms/req",
        flush=True,
    )


def stream_cost(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per configuration and level: the streamed request's overheads minus the plain one's."""
    key = ("limits", "arrival", "concurrency")
    plain = {tuple(r[k] for k in key): r for r in rows if r["mode"] == "static"}
    out = []
    for r in rows:
        base = plain.get(tuple(r[k] for k in key))
        if r["mode"] != "static-stream" or base is None:
            continue
        out.append(
            {
                "limits": r["limits"],
                "arrival": r["arrival"],
                "concurrency": r["concurrency"],
                "server_p50_added_ms": round(
                    r["overhead_server_p50_ms"] - base["overhead_server_p50_ms"], 3
                ),
                "client_p50_added_ms": round(
                    r["overhead_client_p50_ms"] - base["overhead_client_p50_ms"], 2
                ),
                "cpu_ms_per_request_added": round(
                    r["cpu_ms_per_request"] - base["cpu_ms_per_request"], 3
                ),
            }
        )
    met = all(o["server_p50_added_ms"] <= 1.0 for o in out) if out else None
    return {"rows": out, "server_p50_le_1ms": met}


def build_parser() -> argparse.ArgumentParser:
    """The script's options (the shared ones from ``_bench.arguments`` first)."""
    parser = arguments(__doc__)
    parser.add_argument("--concurrency", default="1,16,64,256", help="comma-separated levels")
    parser.add_argument(
        "--modes", default="direct,static,static-stream", help="static-stream: streamed static"
    )
    parser.add_argument(
        "--limits",
        default="default,raised",
        help="default (solver MAX_CONCURRENCY 32, pool 100, as shipped) or raised (4096)",
    )
    parser.add_argument(
        "--arrivals",
        default="staggered,burst",
        help="staggered: clients' first requests spread over one cycle; burst: all at once "
        "(lockstep against the fixed-delay stub)",
    )
    parser.add_argument("--delay-s", type=float, default=0.5, help="stub model answer delay")
    parser.add_argument("--duration-s", type=float, default=10.0, help="per level and mode")
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument(
        "--tracing-rounds", type=int, default=5, help="tracing off/on rounds (0: skip)"
    )
    parser.add_argument(
        "--tracing-delay-s", type=float, default=0.02, help="stub delay for the tracing rounds"
    )
    parser.add_argument(
        "--tracing-modes", default="direct,static", help="the modes the tracing rounds measure"
    )
    parser.add_argument(
        "--tracing-duration-s",
        type=float,
        default=None,
        help="measured seconds per tracing round (default: --duration-s)",
    )
    parser.add_argument(
        "--tracing-ratio",
        type=float,
        default=None,
        help="also measure tracing on with this parent-based trace-id ratio sampling "
        "(0: every request unsampled, what tracing costs with nothing recorded)",
    )
    parser.add_argument(
        "--tracing-baseline",
        default=None,
        help="git ref of a service from before tracing, measured beside off and on",
    )
    parser.add_argument(
        "--tracing-aa",
        action="store_true",
        help="also measure a second tracing-off service: the noise floor of the comparison",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="side-by-side rounds (tracing, features) start new service processes every round",
    )
    parser.add_argument(
        "--tracing-sequential",
        action="store_true",
        help="tracing rounds measure the services one after another, not interleaved",
    )
    parser.add_argument(
        "--tracing-compare",
        default=None,
        metavar="REF",
        help="git ref of an earlier tracing implementation, measured on beside this one",
    )
    parser.add_argument(
        "--features-rounds",
        type=int,
        default=5,
        help="limits + cache miss + ledger all off/on rounds at one client (0: skip)",
    )
    parser.add_argument(
        "--features-delay-s", type=float, default=0.02, help="stub delay for the features rounds"
    )
    return parser


def main() -> int:
    args = parse(build_parser(), "overhead")
    if args.smoke:
        args.concurrency, args.duration_s, args.warmup_s, args.delay_s = "1,4", 1.0, 0.3, 0.02
        args.limits = "default"
        args.tracing_rounds = 2 if args.fresh else 1  # fresh: a restart measured too
        args.features_rounds = 1
    args.levels = [int(c) for c in args.concurrency.split(",")]
    configs = [(lim, arr) for lim in args.limits.split(",") for arr in args.arrivals.split(",")]

    info = machine()
    rows = []
    with stub_model(args.delay_s) as stub:
        for limits in args.limits.split(","):
            rows += run_config(limits, stub.url, args)

    def met(key: str, bound: float, limits: str, arrival: str) -> bool | None:
        at64 = [
            r
            for r in rows
            if r["concurrency"] == 64 and r["limits"] == limits and r["arrival"] == arrival
        ]
        return all(r[key] <= bound for r in at64) if at64 else None

    targets = {
        f"{limits}/{arrival}": {
            "server_p50_le_1ms": met("overhead_server_p50_ms", 1.0, limits, arrival),
            "server_p99_le_5ms": met("overhead_server_p99_ms", 5.0, limits, arrival),
            "client_p50_le_1ms": met("overhead_client_p50_ms", 1.0, limits, arrival),
            "client_p99_le_5ms": met("overhead_client_p99_ms", 5.0, limits, arrival),
        }
        for limits, arrival in configs
    }
    streaming = stream_cost(rows)
    tracing = tracing_cost(measure, measure_interleaved, args) if args.tracing_rounds else None
    features = features_cost(measure, args) if args.features_rounds else None
    report = {
        "benchmark": "overhead",
        "machine": info,
        "settings": {
            "delay_s": args.delay_s,
            "duration_s": args.duration_s,
            "warmup_s": args.warmup_s,
            "modes": args.modes.split(","),
            "concurrency": args.levels,
            "configs": ["/".join(c) for c in configs],
            "static_plan": INDEPENDENT_PLAN.splitlines(),
        },
        "rows": rows,
        "targets_at_64": targets,
        # What streaming adds: static-stream minus static, same limits, arrival, level.
        "streaming": streaming,
        # What tracing adds at one client: on minus off (and off minus before).
        "tracing": tracing,
        # What per-key limits, a cache miss and the ledger add at one client: on - off.
        "features": features,
    }
    columns = [
        "limits",
        "arrival",
        "mode",
        "concurrency",
        "requests",
        "errors",
        "throughput_rps",
        "latency_p50_ms",
        "overhead_server_p50_ms",
        "overhead_server_p99_ms",
        "overhead_client_p50_ms",
        "overhead_client_p99_ms",
        "cpu_ms_per_request",
    ]
    print()
    print(table(rows, columns))
    print("\ntargets at 64 concurrent (p50 <= 1 ms, p99 <= 5 ms):")
    for config, result in targets.items():
        print(f"  {config}: {result}")
    if streaming["rows"]:
        print("\nstreaming adds (static-stream - static, p50 ms):")
        print(table(streaming["rows"], list(streaming["rows"][0])))
        print(f"  server p50 <= 1 ms at every level: {streaming['server_p50_le_1ms']}")
    write_json(args.out, report)
    traced = tracing["rows"] if tracing else []
    featured = features["rows"] if features else []
    return 0 if all(r["errors"] == 0 for r in rows + traced + featured) else 1


if __name__ == "__main__":
    raise SystemExit(main())
