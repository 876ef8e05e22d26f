"""Decomposition quality of adapters through ``POST /decompose``.

For each held-out problem with gold subquestions, ask the running service to
decompose it with each adapter ('none' = the base model's few-shot prompt)
and score with the evaluation harness's functions: right count, count within
one, best-match token F1, repeats; plus decomposer tokens per problem.

Two repeat measures: ``repeat_rate``, problems where the decomposer wrote a
subquestion again (the service drops the copy and reports it as
``repeats_dropped``), and ``near_duplicate_rate``, problems where two kept
items have token F1 >= 0.9. The second also flags distinct parallel steps
("... on Tuesday?" / "... on Wednesday?"), so the gold row is scored too, as
its reference.
"""

from __future__ import annotations

import asyncio
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx2

from service.evaluation.scoring import decomposition_f1, has_duplicate


async def _decompose_all(
    url: str,
    rows: Sequence[dict[str, Any]],
    adapter: str,
    cap: int,
    concurrency: int,
    headers: dict[str, str],
) -> list[dict[str, Any]]:
    slots = asyncio.Semaphore(concurrency)
    async with httpx2.AsyncClient(timeout=600, headers=headers) as client:

        async def one(row: dict[str, Any]) -> dict[str, Any]:
            async with slots:
                resp = await client.post(
                    f"{url}/decompose",
                    json={
                        "question": row["question"],
                        "max_subquestions": cap,
                        "decomposer_adapter": adapter,
                    },
                )
            resp.raise_for_status()
            body: dict[str, Any] = resp.json()
            return body

        return await asyncio.gather(*(one(r) for r in rows))


def score(
    gold: Sequence[Sequence[str]],
    predicted: Sequence[Sequence[str]],
    repeats: Sequence[int],
) -> dict[str, float]:
    """Decomposition quality; ``repeats`` = items dropped as repeats per problem."""
    pairs = list(zip(gold, predicted, strict=True))
    f1s = [decomposition_f1(g, p) or 0.0 for g, p in pairs]
    n = len(pairs)
    return {
        "problems": n,
        "f1": round(statistics.mean(f1s), 4),
        "count_exact": round(sum(len(g) == len(p) for g, p in pairs) / n, 4),
        "count_within_one": round(sum(abs(len(g) - len(p)) <= 1 for g, p in pairs) / n, 4),
        "repeat_rate": round(sum(r > 0 for r in repeats) / n, 4),
        "near_duplicate_rate": round(sum(has_duplicate(p) for p in predicted) / n, 4),
        "mean_subquestions": round(statistics.mean(len(p) for p in predicted), 2),
    }


def evaluate(
    url: str,
    data: Path,
    adapters: Sequence[str],
    *,
    limit: int | None = None,
    cap: int = 8,
    concurrency: int = 8,
    api_key: str | None = None,
) -> dict[str, dict[str, float]]:
    rows = [json.loads(line) for line in data.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("subquestions")][:limit]
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    gold = [r["subquestions"] for r in rows]
    report = {"gold": score(gold, gold, [0] * len(gold))}
    for adapter in adapters:
        bodies = asyncio.run(_decompose_all(url, rows, adapter, cap, concurrency, headers))
        result = score(
            gold, [b["subquestions"] for b in bodies], [b["repeats_dropped"] for b in bodies]
        )
        dec = [b["usage"]["decomposer"] for b in bodies]
        result["prompt_tokens"] = round(statistics.mean(d["prompt_tokens"] for d in dec), 1)
        result["completion_tokens"] = round(statistics.mean(d["completion_tokens"] for d in dec), 1)
        result["latency_ms_p50"] = round(statistics.median(d["latency_ms"] for d in dec), 1)
        report[adapter] = result
    return report


def markdown(report: dict[str, dict[str, float]]) -> str:
    cols = [
        "problems", "f1", "count_exact", "count_within_one", "repeat_rate",
        "near_duplicate_rate", "mean_subquestions", "prompt_tokens", "completion_tokens",
        "latency_ms_p50",
    ]  # fmt: skip
    lines = ["| adapter | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, row in report.items():
        lines.append(f"| {name} | " + " | ".join(str(row.get(c, "")) for c in cols) + " |")
    return "\n".join(lines)
