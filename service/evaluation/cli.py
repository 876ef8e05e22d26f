"""``python -m service eval``: run a dataset through ``/solve`` per mode, score, report.

``cmd_eval`` is four named steps: pick the modes and problems, request what
``results.jsonl`` does not hold yet (against ``--url`` or a service started in
this process), score this selection, write the reports.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx2

from service.cli.local_service import PROBE_TIMEOUT_S, in_process_server, wait_ready
from service.core.settings import MODES, Settings
from service.evaluation.datasets import DEFAULT_DATASET, FORMATS, Dataset, Problem
from service.evaluation.runner import RunStats


def _eval_modes(spec: str) -> list[str]:
    modes = [m.strip() for m in spec.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown or not modes:
        raise SystemExit(f"--modes: unknown {unknown}; choose from {','.join(MODES)}")
    return modes


def _eval_problems(args: argparse.Namespace) -> tuple[Dataset, list[Problem]]:
    """The dataset and the selection of it (``--limit``, ``--seed``) to evaluate."""
    from service.evaluation import datasets

    if args.concurrency < 1 or (args.limit is not None and args.limit < 1):
        raise SystemExit("--concurrency and --limit must be at least 1")
    try:
        dataset = datasets.load(Path(args.dataset or DEFAULT_DATASET), args.format)
    except datasets.DatasetError as exc:
        raise SystemExit(str(exc)) from None
    trained = datasets.training_questions()
    if args.dataset is None:
        # The default: only problems the shipped adapter never saw (its held-out split).
        dataset = datasets.never_seen(dataset, trained)
    elif seen := datasets.overlap(dataset.problems, trained):
        print(
            f"warning: {seen} of {len(dataset.problems)} problems in {args.dataset} trained "
            "the shipped decomposer (service/adapters/gsm8k-socratic/training_problems.json): "
            "its scores there flatter it; leave out --dataset for held-out problems",
            file=sys.stderr,
        )
    return dataset, datasets.select(dataset.problems, args.limit, args.seed)


def _eval_service(
    args: argparse.Namespace, settings: Settings, client: httpx2.Client, stack: contextlib.ExitStack
) -> str:
    """The URL of the service to evaluate: ``--url``, else one started in this process."""
    if args.url:
        url = str(args.url).rstrip("/")
        try:
            client.get(f"{url}/healthz", timeout=PROBE_TIMEOUT_S)
        except httpx2.TransportError:
            raise SystemExit(f"no service at {url}") from None
        return url
    print("starting the service in this process...", file=sys.stderr)
    # One access line per request would bury the progress bar, and
    # results.jsonl holds the same figures.
    logging.getLogger("divconq.access").setLevel(logging.WARNING)
    return stack.enter_context(in_process_server(settings))


def _eval_run(
    args: argparse.Namespace,
    settings: Settings,
    problems: list[Problem],
    modes: list[str],
    results_path: Path,
) -> RunStats:
    """Request what ``results_path`` does not hold yet; nothing at all if it holds everything."""
    from service.evaluation import runner

    if not runner.pending_requests(problems, modes, results_path):
        total = len(problems) * len(modes)
        return runner.RunStats(total=total, skipped=total, requested=0, errors=0)
    extra = {
        k: v
        for k, v in (("decomposer_adapter", args.decomposer_adapter), ("solver", args.solver))
        if v
    }
    with (
        httpx2.Client(timeout=httpx2.Timeout(30.0, connect=2.0)) as client,
        contextlib.ExitStack() as stack,
    ):
        url = _eval_service(args, settings, client, stack)
        wait_ready(client, url, timeout_s=900)
        return asyncio.run(
            runner.run(
                problems,
                modes,
                url=url,
                results_path=results_path,
                concurrency=args.concurrency,
                max_subquestions=args.max_subquestions,
                timeout_s=args.timeout,
                extra=extra,
            )
        )


def _eval_report(
    args: argparse.Namespace,
    settings: Settings,
    dataset: Dataset,
    problems: list[Problem],
    modes: list[str],
    run: dict[str, Any],
) -> None:
    """Score this selection's results; write summary.json and plot.png; print the table."""
    from service.evaluation import report, runner, scoring

    out = Path(args.out)
    results_path = out / "results.jsonl"
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
        "run": run,
        "results": str(results_path),
    }
    report.write_summary(out / "summary.json", summaries, meta)
    report.plot(out / "plot.png", summaries, title=f"{dataset.path.name}, {len(problems)} problems")
    print(report.markdown_table(summaries), end="")


def cmd_eval(args: argparse.Namespace, settings: Settings) -> int:
    """Run a dataset through /solve in several modes; table, summary.json, plot.png."""
    modes = _eval_modes(args.modes)
    dataset, problems = _eval_problems(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.jsonl"
    print(
        f"{len(problems)} problems x {len(modes)} modes from {dataset.path} ({dataset.format}); "
        f"results in {results_path}",
        file=sys.stderr,
    )
    started = time.monotonic()
    try:
        stats = _eval_run(args, settings, problems, modes, results_path)
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to resume", file=sys.stderr)
        return 130
    wall_s = time.monotonic() - started
    _eval_report(
        args, settings, dataset, problems, modes, {**asdict(stats), "wall_s": round(wall_s, 1)}
    )
    print(
        f"{stats.requested} requested, {stats.skipped} resumed, {stats.errors} errors, "
        f"{wall_s:.0f} s; wrote {out / 'summary.json'} and {out / 'plot.png'}",
        file=sys.stderr,
    )
    return 0


def add_parser(sub: Any) -> None:
    ev = sub.add_parser(
        "eval",
        help="score a dataset per mode: accuracy, decomposition quality, tokens, cost, latency",
        description="Run a dataset through /solve in several modes. Prints a markdown table; "
        "writes results.jsonl (resumable: re-run the same command to continue), "
        "summary.json and plot.png under --out.",
    )
    ev.add_argument(
        "--dataset",
        help=f"default: the problems of {DEFAULT_DATASET.name} that did not train the shipped "
        "decomposer (its held-out split); a dataset that overlaps them gets a warning",
    )
    ev.add_argument(
        "--format",
        choices=("auto", *FORMATS),
        default="auto",
        help="the dataset's format; auto = told from its rows",
    )
    ev.add_argument("--limit", type=int, help="at most this many problems")
    ev.add_argument("--seed", type=int, help="sample problems at random (default: file order)")
    ev.add_argument("--modes", default=",".join(MODES), help="comma-separated (%(default)s)")
    ev.add_argument("--url", help="a running service (default: start one in this process)")
    ev.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    ev.add_argument("--out", default=".data/eval", help="output directory (%(default)s)")
    ev.add_argument(
        "--max-subquestions", type=int, help="cap per request; unset = the service's default"
    )
    ev.add_argument("--timeout", type=float, default=900.0, help="seconds per request")
    ev.add_argument("--decomposer-adapter", help="adapter for every request ('none' = base model)")
    ev.add_argument("--solver", help="solver profile for every request")
    ev.set_defaults(func=cmd_eval)
