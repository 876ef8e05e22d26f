"""How often the embedded solver can find the answer at all: pass@k and maj@k.

Greedy accuracy says what one answer is worth. This asks the distilled solver
for ``--samples`` whole solutions per problem at ``--temperature`` (the
``direct`` task, through the service's own ``/v1/chat/completions``, with the
calculator, as ``direct`` mode sends it) and reports, on the same problems:

- greedy: one answer at temperature 0, as ``python -m service eval`` scores it;
- pass@k: some sample has the right answer (a ceiling for any vote, verifier
  or reranker over k samples);
- maj@k: the most common sample answer is right (self-consistency, Wang et
  al. 2022).

When pass@k is far below a target, no way of choosing among the model's own
samples reaches it: the model has to get better.

    .venv/bin/python -m service serve &
    .venv/bin/python benchmarks/sampling_ceiling.py --url http://127.0.0.1:8000 \\
        --dataset .data/distill/gsm8k/held_out.jsonl --problems 30 --samples 8
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from _bench import RESULTS, machine, table, write_json

from service.core.settings import Settings
from service.evaluation import datasets
from service.evaluation.scoring import answer_correct
from service.pipeline.parsing import extract_answer
from service.pipeline.prompts import distilled_direct


def direct_limits() -> dict[str, Any]:
    """``max_tokens`` and ``stop`` as ``direct`` mode sends them to the default solver."""
    settings = Settings()
    profile = settings.solver
    return {"max_tokens": settings.solver_tokens(profile), "stop": settings.solver_stop(profile)}


async def _ask(
    client: httpx.AsyncClient,
    url: str,
    question: str,
    temperature: float,
    gate: asyncio.Semaphore,
    limits: dict[str, Any],
) -> tuple[str, int]:
    body = {"messages": distilled_direct(question), "temperature": temperature, **limits}
    async with gate:
        resp = await client.post(f"{url}/v1/chat/completions", json=body)
    resp.raise_for_status()
    body = resp.json()
    text = body["choices"][0]["message"]["content"] or ""
    return extract_answer(text, question), int(body.get("usage", {}).get("completion_tokens", 0))


async def measure(
    url: str,
    problems: list[datasets.Problem],
    samples: int,
    temperature: float,
    concurrency: int,
) -> dict[str, Any]:
    gate = asyncio.Semaphore(concurrency)
    limits = direct_limits()
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=900) as client:
        greedy = [
            asyncio.create_task(_ask(client, url, p.question, 0.0, gate, limits)) for p in problems
        ]
        sampled = [
            [
                asyncio.create_task(_ask(client, url, p.question, temperature, gate, limits))
                for _ in range(samples)
            ]
            for p in problems
        ]
        greedy_out = await asyncio.gather(*greedy)
        sampled_out = [await asyncio.gather(*tasks) for tasks in sampled]
    wall = time.perf_counter() - started

    right_greedy = right_any = right_vote = 0
    distinct = []
    per_problem = []
    tokens = sum(n for _, n in greedy_out)
    for problem, (g_answer, _), outs in zip(problems, greedy_out, sampled_out, strict=True):
        answers = [a for a, _ in outs]
        tokens += sum(n for _, n in outs)
        votes = Counter(a for a in answers if a)
        top = votes.most_common(1)[0][0] if votes else ""
        hits = [answer_correct(a, problem.answer) for a in answers]
        right_greedy += answer_correct(g_answer, problem.answer)
        right_any += any(hits)
        right_vote += answer_correct(top, problem.answer)
        distinct.append(len(votes))
        per_problem.append(
            {"id": problem.id, "gold": problem.answer, "greedy": g_answer, "samples": answers}
        )
    n = len(problems)
    return {
        "problems": n,
        "samples": samples,
        "temperature": temperature,
        "greedy": f"{right_greedy}/{n}",
        f"pass@{samples}": f"{right_any}/{n}",
        f"maj@{samples}": f"{right_vote}/{n}",
        "greedy_pct": round(100 * right_greedy / n, 1) if n else 0.0,
        "pass_pct": round(100 * right_any / n, 1) if n else 0.0,
        "maj_pct": round(100 * right_vote / n, 1) if n else 0.0,
        "distinct_answers": round(sum(distinct) / n, 2) if n else 0.0,
        "output_tokens_per_s": round(tokens / wall, 1),
        "wall_s": round(wall, 1),
        "per_problem": per_problem,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="a running service, embedded model at /v1")
    ap.add_argument("--dataset", type=Path, default=datasets.DEFAULT_DATASET)
    ap.add_argument("--format", default="auto")
    ap.add_argument("--problems", type=int, default=30, help="the first N problems")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--out", default=str(RESULTS / "sampling_ceiling.json"))
    args = ap.parse_args()

    data = datasets.load(args.dataset, args.format)
    problems = datasets.select(data.problems, args.problems, None)
    info = machine()
    print(f"machine: {info}")
    result = asyncio.run(
        measure(args.url.rstrip("/"), problems, args.samples, args.temperature, args.concurrency)
    )
    shown = {k: v for k, v in result.items() if not k.endswith("_pct") and k != "per_problem"}
    print(f"\n{args.dataset.name}, the distilled solver's whole-solution task:")
    print(table([shown]))
    write_json(
        args.out,
        {"benchmark": "sampling_ceiling", "machine": info, "dataset": str(args.dataset), **result},
    )


if __name__ == "__main__":
    main()
