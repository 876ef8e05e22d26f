"""Command line: ``serve``, ``prepare-model`` and ``solve``.

``python -m service <command>`` or the ``divconq`` console script. vLLM starts
its engine core in a spawned process, so every entry point that can build the
engine runs behind a ``__main__`` guard (see ``service/__main__.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import httpx2

from service.logs import configure_logging
from service.settings import MODES, Settings


def _secrets(settings: Settings) -> list[str]:
    keys = (settings.solver.api_key, settings.decomposer.api_key)
    return [k.get_secret_value() for k in keys if k is not None]


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from service.app import create_app

    updates: dict[str, Any] = {}
    if args.host:
        updates["host"] = args.host
    if args.port:
        updates["port"] = args.port
    settings = settings.model_copy(update=updates)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # Our JSON handler on the root logger (configure_logging) formats uvicorn too.
        log_config=None,
        timeout_graceful_shutdown=30,
    )
    return 0


def cmd_prepare_model(args: argparse.Namespace, settings: Settings) -> int:
    from service.model_prep import prepare_embedded_model

    path = prepare_embedded_model(settings.embedded_model_dir, force=args.force)
    print(path)
    return 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _in_process_server(settings: Settings) -> Iterator[str]:
    """Run the service on a free loopback port for one CLI call."""
    import uvicorn

    from service.app import create_app

    settings = settings.model_copy(update={"host": "127.0.0.1", "port": _free_port()})
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings), host=settings.host, port=settings.port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{settings.port}"
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def _wait_ready(client: httpx2.Client, url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            resp = client.get(f"{url}/readyz")
            if resp.status_code == 200:
                return
            last = resp.json().get("decomposer", {}).get("state", resp.text)
            if str(last).startswith("failed"):
                break
        except httpx2.TransportError as exc:
            last = type(exc).__name__
        time.sleep(1.0)
    raise SystemExit(f"service at {url} did not become ready: {last}")


def _print_result(result: dict[str, Any]) -> None:
    print(f"answer: {result['answer']}")
    for i, sub in enumerate(result["subquestions"], 1):
        print(f"  {i}. {sub['question']}")
        if sub["answer"]:
            print(f"     -> {' '.join(sub['answer'].split())[:200]}")
    print(f"answer_text: {' '.join(result['answer_text'].split())[:500]}")
    usage = result["usage"]
    print(f"{'stage':<11}{'model':<28}{'calls':>6}{'prompt':>8}{'output':>8}{'ms':>10}")
    for stage in ("decomposer", "solver"):
        u = usage[stage]
        print(
            f"{stage:<11}{u['model'][:27]:<28}{u['calls']:>6}{u['prompt_tokens']:>8}"
            f"{u['completion_tokens']:>8}{u['latency_ms']:>10.0f}"
        )
    total = usage["total"]
    print(
        f"{'total':<11}{'':<28}{'':>6}{total['prompt_tokens']:>8}"
        f"{total['completion_tokens']:>8}{result['latency_ms']:>10.0f}"
    )


def cmd_solve(args: argparse.Namespace, settings: Settings) -> int:
    payload: dict[str, Any] = {"question": args.question}
    if args.mode:
        payload["mode"] = args.mode
    if args.max_subquestions:
        payload["max_subquestions"] = args.max_subquestions
    url = (args.url or f"http://127.0.0.1:{settings.port}").rstrip("/")
    with (
        httpx2.Client(timeout=httpx2.Timeout(600.0, connect=2.0)) as client,
        contextlib.ExitStack() as stack,
    ):
        try:
            client.get(f"{url}/healthz")
        except httpx2.TransportError:
            if args.url:
                raise SystemExit(f"no service at {url}") from None
            print("no running service; starting one in this process...", file=sys.stderr)
            url = stack.enter_context(_in_process_server(settings))
        _wait_ready(client, url, timeout_s=900)
        resp = client.post(f"{url}/solve", json=payload)
    result = resp.json()
    if args.json or resp.status_code != 200:
        print(json.dumps(result, indent=2))
        return 0 if resp.status_code == 200 else 1
    _print_result(result)
    return 0


def cmd_eval(args: argparse.Namespace, settings: Settings) -> int:
    """Run a dataset through /solve in several modes; table, summary.json, plot.png."""
    import asyncio
    import logging
    from dataclasses import asdict
    from pathlib import Path

    from service.evaluation import datasets, report, runner, scoring

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown or not modes:
        raise SystemExit(f"--modes: unknown {unknown}; choose from {','.join(MODES)}")
    if args.concurrency < 1 or (args.limit is not None and args.limit < 1):
        raise SystemExit("--concurrency and --limit must be at least 1")
    try:
        dataset = datasets.load(Path(args.dataset), args.format)
    except datasets.DatasetError as exc:
        raise SystemExit(str(exc)) from None
    problems = datasets.select(dataset.problems, args.limit, args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.jsonl"
    print(
        f"{len(problems)} problems x {len(modes)} modes from {dataset.path} ({dataset.format}); "
        f"results in {results_path}",
        file=sys.stderr,
    )
    started = time.monotonic()
    total = len(problems) * len(modes)
    if runner.pending_requests(problems, modes, results_path):
        try:
            with (
                httpx2.Client(timeout=httpx2.Timeout(30.0, connect=2.0)) as client,
                contextlib.ExitStack() as stack,
            ):
                if args.url:
                    url = args.url.rstrip("/")
                    try:
                        client.get(f"{url}/healthz")
                    except httpx2.TransportError:
                        raise SystemExit(f"no service at {url}") from None
                else:
                    print("starting the service in this process...", file=sys.stderr)
                    # One access line per request would bury the progress bar, and
                    # results.jsonl holds the same figures.
                    logging.getLogger("divconq.access").setLevel(logging.WARNING)
                    url = stack.enter_context(_in_process_server(settings))
                _wait_ready(client, url, timeout_s=900)
                stats = asyncio.run(
                    runner.run(
                        problems,
                        modes,
                        url=url,
                        results_path=results_path,
                        concurrency=args.concurrency,
                        max_subquestions=args.max_subquestions,
                        timeout_s=args.timeout,
                        extra={
                            k: v
                            for k, v in (
                                ("decomposer_adapter", args.decomposer_adapter),
                                ("solver", args.solver),
                            )
                            if v
                        },
                    )
                )
        except KeyboardInterrupt:
            print("\ninterrupted: run the same command again to resume", file=sys.stderr)
            return 130
    else:
        # Everything is in results.jsonl: only the reports are rebuilt, no service needed.
        stats = runner.RunStats(total=total, skipped=total, requested=0, errors=0)
    wall_s = time.monotonic() - started
    # Only this selection: the file may also hold results of a larger earlier run.
    keys = {(p.id, m) for p in problems for m in modes}
    records = [
        r
        for r in runner.read_results(results_path)
        if (str(r["problem_id"]), str(r["mode"])) in keys
    ]
    summaries = scoring.summarize(records, modes, settings.prices)
    meta = {
        "dataset": str(dataset.path),
        "format": dataset.format,
        "fewshot_skipped": dataset.skipped,
        "problems": len(problems),
        "limit": args.limit,
        "seed": args.seed,
        "modes": modes,
        "url": args.url or "in-process",
        "max_subquestions": args.max_subquestions,
        "concurrency": args.concurrency,
        "prices": {name: price.model_dump() for name, price in settings.prices.items()},
        "run": {**asdict(stats), "wall_s": round(wall_s, 1)},
        "results": str(results_path),
    }
    report.write_summary(out / "summary.json", summaries, meta)
    report.plot(out / "plot.png", summaries, title=f"{dataset.path.name}, {len(problems)} problems")
    print(report.markdown_table(summaries), end="")
    print(
        f"{stats.requested} requested, {stats.skipped} resumed, {stats.errors} errors, "
        f"{wall_s:.0f} s; wrote {out / 'summary.json'} and {out / 'plot.png'}",
        file=sys.stderr,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    from service.distill.cli import add_parser as add_distill

    parser = argparse.ArgumentParser(prog="divconq", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add_distill(sub)

    serve = sub.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", help="bind address (DIVCONQ_HOST)")
    serve.add_argument("--port", type=int, help="port (DIVCONQ_PORT)")
    serve.set_defaults(func=cmd_serve)

    prep = sub.add_parser("prepare-model", help="convert the embedded GGUF model once")
    prep.add_argument("--force", action="store_true", help="rebuild even if cached")
    prep.set_defaults(func=cmd_prepare_model)

    solve = sub.add_parser("solve", help="solve one question and print the accounting")
    solve.add_argument("question")
    solve.add_argument("--mode", choices=MODES)
    solve.add_argument("--max-subquestions", type=int)
    solve.add_argument("--url", help="a running service (default: localhost, else in-process)")
    solve.add_argument("--json", action="store_true", help="print the raw JSON response")
    solve.set_defaults(func=cmd_solve)

    from service.evaluation.datasets import DEFAULT_DATASET, FORMATS

    ev = sub.add_parser(
        "eval",
        help="score a dataset per mode: accuracy, decomposition quality, tokens, cost, latency",
        description="Run a dataset through /solve in several modes. Prints a markdown table; "
        "writes results.jsonl (resumable: re-run the same command to continue), "
        "summary.json and plot.png under --out.",
    )
    ev.add_argument("--dataset", default=str(DEFAULT_DATASET), help="default: %(default)s")
    ev.add_argument("--format", choices=("auto", *FORMATS), default="auto")
    ev.add_argument("--limit", type=int, help="at most this many problems")
    ev.add_argument("--seed", type=int, help="sample problems at random (default: file order)")
    ev.add_argument("--modes", default=",".join(MODES), help="comma-separated (%(default)s)")
    ev.add_argument("--url", help="a running service (default: start one in this process)")
    ev.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    ev.add_argument("--out", default=".data/eval", help="output directory (%(default)s)")
    ev.add_argument("--max-subquestions", type=int)
    ev.add_argument("--timeout", type=float, default=900.0, help="seconds per request")
    ev.add_argument("--decomposer-adapter", help="adapter for every request ('none' = base model)")
    ev.add_argument("--solver", help="solver profile for every request")
    ev.set_defaults(func=cmd_eval)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # vLLM logs to stdout by default; stdout is for command output (solve --json).
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    if args.command in ("solve", "eval"):
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    if args.command == "serve":
        # vLLM's frontend loggers then propagate to our JSON handler.
        os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")
    settings = Settings()
    configure_logging(settings.log_level, _secrets(settings))
    return int(args.func(args, settings))
