"""The CPU a traced request costs, measured in process: a figure a shared machine can give.

``benchmarks/overhead.py`` times tracing as a client sees it, which needs a
quiet machine. This counts CPU instead: the app is built in process (as the
fast tier builds it: ``create_app`` with an ``httpx2.MockTransport`` answering
the HTTP decomposer and the solver at once) and one client sends ``direct``
and ``static`` ``/solve`` requests through ``httpx.ASGITransport``, one at a
time, to two apps side by side:

- ``off``: tracing off (``OTEL_TRACES_EXPORTER=none``);
- ``on``: tracing as the standard variables turn it on (``start_from_env``):
  the real OTLP/HTTP exporter behind the SDK's batch processor, every request
  sampled, exporting to the stub model's ``/v1/traces`` sink (another
  process). Each ``on`` batch ends with a flush, so the exporter's encoding
  (on its own thread) is charged to the batch that made the spans.

Rounds alternate the order of ``off`` and ``on``; the figure per mode is the
median over rounds of process CPU (``time.process_time``: every thread) per
request, and the difference on - off. ``--compare REF`` measures the
``service`` package as of git ``REF`` too, in its own worker process, the
two workers taking turns round by round, so both code versions are measured
side by side in one run. ``--profile`` prints where the ``on`` app's CPU goes
(cProfile, one ``static`` batch, the current tree only).

``--cold-mb N``: the caches as a served request finds them. In
``overhead.py`` each model call is answered after a 20 ms wait, in which the
other processes evict the service's L1 and L2 caches, so every step of a
request runs cold, at two to three times its in-process cost. Here the
worker writes N MiB (more than the core's L2) before each request and
before each model call is answered; the CPU that writing takes is not
counted. It needs no quiet machine and takes a minute or two, where
``overhead.py``'s rounds need a quiet one for a quarter of an hour.

    python benchmarks/tracing_cpu.py --requests 3000 --rounds 5 --compare main

Same CPU and logging set-up as overhead.py's services: no response cache,
no ledger, log level warning. Process CPU still moves with a busy machine
(shared caches and cores), less than wall time does: compare figures from one
run only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

MODES = ("direct", "static")
CONFIGS = ("off", "on")
PLAN = (
    "1. How many apples does Tom have?\n"
    "2. How many pears does Ann buy?\n"
    "3. How many plums does Bob pick?\n"
    "4. How many fruits do they have in total?"
)
QUESTION = "Tom has 3 apples, Ann buys 4 pears and Bob picks 5 plums. How many fruits?"


# --- the worker: one code version, in its own process ------------------------------


class _Cold:
    """Evicts the core's private caches (``--cold-mb``), keeping count of the CPU it
    takes: that CPU is taken off the requests'."""

    def __init__(self, mb: int) -> None:
        import ctypes

        self._size = mb << 20
        self._src = bytes(self._size)
        self._buf = bytearray(self._size)
        self._dst = (ctypes.c_char * self._size).from_buffer(self._buf)
        self._memmove = ctypes.memmove
        self.cpu = 0.0  # seconds: the serving thread's, which is also the process's

    def __call__(self) -> None:
        if self._size:
            started = time.thread_time()
            self._memmove(self._dst, self._src, self._size)
            self.cpu += time.thread_time() - started


_cold = _Cold(0)


def _answers() -> Any:
    """The model calls' answers (bytes made once), as the stub model gives them; with
    ``--cold-mb``, the caches evicted before each."""
    import httpx2

    usage = {"prompt_tokens": 80, "completion_tokens": 8}
    chat = json.dumps(
        {
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "The answer is 7."},
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
        }
    ).encode()
    chunk = {"object": "chat.completion.chunk"}
    events = [
        {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant"}}]},
        {**chunk, "choices": [{"index": 0, "delta": {"content": "The answer is 7."}}]},
        {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {**chunk, "choices": [], "usage": usage},
    ]
    stream = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    stream += b"data: [DONE]\n\n"
    plan = json.dumps(
        {
            "choices": [{"index": 0, "text": PLAN, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 120, "completion_tokens": 24},
        }
    ).encode()
    json_type = {"content-type": "application/json"}

    async def answer(request: httpx2.Request) -> httpx2.Response:
        _cold()
        path = request.url.path
        if path.endswith("/chat/completions"):
            if b'"stream":true' in request.content or b'"stream": true' in request.content:
                return httpx2.Response(
                    200, content=stream, headers={"content-type": "text/event-stream"}
                )
            return httpx2.Response(200, content=chat, headers=json_type)
        return httpx2.Response(200, content=plan, headers=json_type)

    return httpx2.MockTransport(answer)


@contextlib.asynccontextmanager
async def _app(config: str, sink: str) -> AsyncIterator[tuple[Any, Any]]:
    """One app (lifespan entered) and a client speaking ASGI to it; its Tracing."""
    import httpx

    from service.api.app import create_app
    from service.api.trace_middleware import TraceMiddleware
    from service.core.settings import Settings

    otel = {
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "",
        "OTEL_SERVICE_NAME": "divconq-bench",
    }
    if config == "on":
        otel |= {
            "OTEL_TRACES_EXPORTER": "",
            "OTEL_EXPORTER_OTLP_ENDPOINT": sink,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        }
    os.environ.update(otel)
    settings = Settings(
        decomposer={"backend": "openai", "base_url": "http://decomposer.test/v1"},
        solver={"base_url": "http://solver.test/v1", "model": "stub"},
        cache={"enabled": False},
        ledger={"enabled": False},
        max_in_flight=8192,
    )
    app = create_app(settings, transport=_answers())
    # (starlette types ``cls`` as a factory protocol, which a class is not to mypy)
    tracing = next(
        m.kwargs["tracing_"] for m in app.user_middleware if m.cls is cast(Any, TraceMiddleware)
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://divconq.test", timeout=30
        ) as client,
    ):
        yield client, tracing


async def _batch(client: Any, tracing: Any, mode: str, n: int) -> tuple[float, float]:
    """CPU seconds for ``n`` requests one after another: every thread's (the export
    included) and the serving thread's (the event loop: the requests' own work)."""
    body = {"question": QUESTION, "mode": mode}
    started, started_loop, evicting = time.process_time(), time.thread_time(), _cold.cpu
    for _ in range(n):
        _cold()
        resp = await client.post("/solve", json=body)
        if resp.status_code != 200:
            raise SystemExit(f"{mode}: HTTP {resp.status_code} {resp.text}")
    if tracing.provider is not None:
        tracing.provider.force_flush()
    evicted = _cold.cpu - evicting
    return time.process_time() - started - evicted, time.thread_time() - started_loop - evicted


async def _worker(sink: str) -> None:
    """Answers the parent's commands on stdin: ``round N FIRST``, ``profile N``, ``quit``."""
    async with _app("off", sink) as off, _app("on", sink) as on:
        if off[1].enabled or not on[1].enabled:
            raise SystemExit("tracing did not come out off and on as configured")
        apps = {"off": off, "on": on}
        for mode in MODES:  # warm-up: imports, first-call caches
            for config in CONFIGS:
                await _batch(*apps[config], mode, 50)
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            command, *rest = line.split()
            if command == "round":
                n, first = int(rest[0]), rest[1]
                order = CONFIGS if first == "off" else CONFIGS[::-1]
                result = {}
                for mode in MODES:
                    for config in order:
                        cpu, loop_cpu = await _batch(*apps[config], mode, n)
                        result[f"{mode}/{config}"] = cpu / n
                        result[f"{mode}/{config}/loop"] = loop_cpu / n
                print(json.dumps(result), flush=True)
            elif command == "profile":
                profile = cProfile.Profile()
                profile.enable()
                await _batch(*apps["on"], "static", int(rest[0]))
                profile.disable()
                out = io.StringIO()
                stats = pstats.Stats(profile, stream=out)
                stats.sort_stats("tottime").print_stats(30)
                stats.sort_stats("cumulative").print_stats(60)
                print(json.dumps({"profile": out.getvalue()}), flush=True)
            else:
                return


# --- the parent: workers per code version, taking turns -----------------------------


class Worker:
    def __init__(self, name: str, tree: Path, sink: str, cold_mb: int) -> None:
        self.name = name
        env = {**os.environ, "PYTHONPATH": str(tree)}
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", sink, "--cold-mb", str(cold_mb)],
            env=env,
            cwd=tree,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        if self._line() != "ready":
            raise SystemExit(f"worker {name} did not start")

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"worker {self.name} exited {self.proc.wait()}")
        return line.strip()

    def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        result: dict[str, Any] = json.loads(self._line())
        return result

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=3000, help="per round, mode and config")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--compare", metavar="REF", help="also measure `service` as of git REF")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="cProfile N requests")
    parser.add_argument(
        "--cold-mb",
        type=int,
        default=0,
        metavar="N",
        help="write N MiB before each request and model call's answer (cold caches; 0: off)",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny run for the test suite")
    parser.add_argument("--worker", metavar="SINK", help=argparse.SUPPRESS)
    parser.add_argument("--out", help="write the figures as JSON here (default: results/)")
    args = parser.parse_args()
    if args.smoke:
        args.requests, args.rounds = 20, 2
    if args.worker:
        from service.observability.logs import configure_logging

        # As `divconq serve` logs under the benchmarks' DIVCONQ_LOG_LEVEL=warning
        # (JSON lines to stderr: none per request at that level).
        configure_logging("warning")
        global _cold
        _cold = _Cold(args.cold_mb)
        asyncio.run(_worker(args.worker))
        return

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _bench import RESULTS, machine, service_at, stub_model, table, write_json

    versions = {"this tree": None} | ({args.compare: args.compare} if args.compare else {})
    samples: dict[tuple[str, str], list[float]] = {}
    with stub_model(0.0) as stub, contextlib.ExitStack() as stack:
        workers = []
        for name, ref in versions.items():
            tree = stack.enter_context(service_at(ref))
            worker = Worker(name, tree, stub.url, args.cold_mb)
            stack.callback(worker.stop)
            workers.append(worker)
        for i in range(args.rounds):
            # Versions take turns, each in both orders of off and on.
            for worker in workers if i % 2 == 0 else workers[::-1]:
                got = worker.ask(f"round {args.requests} {'off' if i % 2 == 0 else 'on'}")
                for key, seconds in got.items():
                    samples.setdefault((worker.name, key), []).append(seconds * 1e3)
            print(f"round {i + 1}/{args.rounds} done", flush=True)
        profile = workers[0].ask(f"profile {args.profile}")["profile"] if args.profile else ""
    rows = []
    for name in versions:
        for mode in MODES:
            row: dict[str, Any] = {"service": name, "mode": mode}
            for what, suffix in (("", ""), ("loop_", "/loop")):
                off = samples[(name, f"{mode}/off{suffix}")]
                on = samples[(name, f"{mode}/on{suffix}")]
                added = [b - a for a, b in zip(off, on, strict=True)]
                row |= {
                    f"{what}off_ms": round(statistics.median(off), 3),
                    f"{what}on_ms": round(statistics.median(on), 3),
                    f"{what}added_ms": round(statistics.median(added), 3),
                    f"{what}added_range": f"{min(added):.3f}..{max(added):.3f}",
                }
            rows.append(row)
    cold = f", caches evicted ({args.cold_mb} MiB written) before each step" if args.cold_mb else ""
    print(
        f"\nCPU per request{cold}, median of {args.rounds} rounds of {args.requests} "
        "(ms; off/on/added: process CPU, every thread, the export included; loop_*: the "
        "serving thread's alone; added = on - off within a round, its median and range):"
    )
    print(table(rows, list(rows[0])))
    if profile:
        print("\nwhere the 'on' app's CPU goes (one static batch, this tree):\n" + profile)
    report = {
        "requests": args.requests,
        "rounds": args.rounds,
        "compare": args.compare,
        "cold_mb": args.cold_mb,
        "machine": machine(),
        "rows": rows,
        "samples_ms": {f"{k[0]}|{k[1]}": v for k, v in samples.items()},
    }
    write_json(args.out or RESULTS / "tracing_cpu.json", report)


if __name__ == "__main__":
    main()
