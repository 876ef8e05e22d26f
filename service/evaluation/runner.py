"""The async runner: problems x modes through ``POST /solve``, results to JSONL.

- Bounded concurrency: an ``asyncio.Semaphore`` caps requests in flight, so a
  small CPU box is not swamped and a hosted solver's rate limits are respected.
- Resumable: each finished request is appended to ``results.jsonl`` as one
  line and flushed at once; a restart reads the file and skips every
  (problem id, mode) already done. A line cut short by an interrupt is ignored.
- Failures are recorded too (``error``, ``status``, ``retryable``): timeouts,
  transport errors, 429 and 5xx are retried by the next run; other 4xx (e.g.
  a question over the service's length limit) would fail again, so they count
  as done (and as wrong answers).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2

from service.evaluation.datasets import Problem

Key = tuple[str, str]  # (problem id, mode)


def read_results(path: Path) -> list[dict[str, Any]]:
    """Every complete record in a results file; missing file = none."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # the last line of an interrupted run may be partial
        if isinstance(rec, dict) and "problem_id" in rec and "mode" in rec:
            records.append(rec)
    return records


def completed_keys(records: Iterable[dict[str, Any]]) -> set[Key]:
    """Keys a resumed run must not request again."""
    return {
        (str(r["problem_id"]), str(r["mode"]))
        for r in records
        if not r.get("error") or not r.get("retryable", True)
    }


def _base_record(problem: Problem, mode: str) -> dict[str, Any]:
    return {
        "problem_id": problem.id,
        "mode": mode,
        "question": problem.question,
        "gold_answer": problem.answer,
        "gold_subquestions": (
            list(problem.gold_subquestions) if problem.gold_subquestions is not None else None
        ),
    }


def success_record(
    problem: Problem, mode: str, body: dict[str, Any], wall_ms: float
) -> dict[str, Any]:
    return {
        **_base_record(problem, mode),
        "error": None,
        "request_id": body.get("id"),
        "answer": body["answer"],
        "answer_text": body["answer_text"],
        "subquestions": [s["question"] for s in body["subquestions"]],
        "usage": body["usage"],
        "latency_ms": body["latency_ms"],
        # Client-side, queueing in the service included; latency_ms is the service's own.
        "wall_ms": wall_ms,
    }


def error_record(
    problem: Problem,
    mode: str,
    message: str,
    status: int | None,
    wall_ms: float,
    retryable: bool | None = None,
) -> dict[str, Any]:
    if retryable is None:
        retryable = status is None or status == 429 or status >= 500
    return {
        **_base_record(problem, mode),
        "error": message,
        "status": status,
        "retryable": retryable,
        "wall_ms": wall_ms,
    }


def _error_message(resp: httpx2.Response) -> str:
    try:
        err = resp.json().get("error", {})
        return f"{resp.status_code} {err.get('type', '')}: {err.get('message', resp.text)}"
    except (ValueError, AttributeError):
        return f"{resp.status_code}: {resp.text[:200]}"


def _ends_mid_line(path: Path) -> bool:
    if path.stat().st_size == 0:
        return False
    with path.open("rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"


def pending_requests(
    problems: Sequence[Problem], modes: Sequence[str], results_path: Path
) -> list[tuple[Problem, str]]:
    """The (problem, mode) pairs a run still has to request, in request order."""
    done = completed_keys(read_results(results_path))
    # Problem-major order: an interrupted run has every mode for the problems it reached.
    return [(p, m) for p in problems for m in modes if (p.id, m) not in done]


@dataclass
class RunStats:
    total: int  # problems x modes
    skipped: int  # already in the results file
    requested: int
    errors: int


async def _solve_one(
    client: httpx2.AsyncClient,
    url: str,
    problem: Problem,
    mode: str,
    max_subquestions: int | None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    payload: dict[str, Any] = {"question": problem.question, "mode": mode, **(extra or {})}
    if problem.context:
        payload["context"] = problem.context
    if max_subquestions:
        payload["max_subquestions"] = max_subquestions
    started = time.perf_counter()
    try:
        resp = await client.post(f"{url}/solve", json=payload)
    except httpx2.HTTPError as exc:
        wall_ms = (time.perf_counter() - started) * 1000.0
        return error_record(problem, mode, f"{type(exc).__name__}: {exc}", None, wall_ms)
    wall_ms = (time.perf_counter() - started) * 1000.0
    if resp.status_code != 200:
        return error_record(problem, mode, _error_message(resp), resp.status_code, wall_ms)
    try:
        return success_record(problem, mode, resp.json(), wall_ms)
    except (ValueError, KeyError, TypeError) as exc:
        # A 200 that breaks the contract: record it, and try again next run.
        message = f"malformed response: {type(exc).__name__}: {exc}"
        return error_record(problem, mode, message, resp.status_code, wall_ms, retryable=True)


async def run(
    problems: Sequence[Problem],
    modes: Sequence[str],
    *,
    url: str,
    results_path: Path,
    concurrency: int = 4,
    max_subquestions: int | None = None,
    timeout_s: float = 900.0,
    progress: bool = True,
    extra: dict[str, Any] | None = None,
) -> RunStats:
    """Request every (problem, mode) not yet in ``results_path``; append each result.

    ``extra``: more /solve fields for every request (solver, decomposer_adapter).
    """
    from tqdm import tqdm

    url = url.rstrip("/")
    pending = pending_requests(problems, modes, results_path)
    total = len(problems) * len(modes)
    stats = RunStats(total=total, skipped=total - len(pending), requested=len(pending), errors=0)
    if not pending:
        return stats

    results_path.parent.mkdir(parents=True, exist_ok=True)
    semaphore = asyncio.Semaphore(concurrency)
    bar = tqdm(
        total=total,
        initial=stats.skipped,
        desc="eval",
        unit="req",
        file=sys.stderr,
        disable=not progress,
        dynamic_ncols=True,
    )
    timeout = httpx2.Timeout(timeout_s, connect=10.0)
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with results_path.open("a", encoding="utf-8") as out:
        if _ends_mid_line(results_path):
            # An interrupt cut the last line short: start on a fresh line.
            out.write("\n")

        async def one(problem: Problem, mode: str) -> None:
            async with semaphore:
                record = await _solve_one(client, url, problem, mode, max_subquestions, extra)
            # One write per line, from the event loop's single thread: lines never interleave.
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            out.flush()
            if record["error"]:
                stats.errors += 1
                bar.set_postfix(errors=stats.errors)
            bar.update(1)

        try:
            async with httpx2.AsyncClient(timeout=timeout, limits=limits) as client:
                await asyncio.gather(*(one(p, m) for p, m in pending))
        finally:
            bar.close()
    return stats
