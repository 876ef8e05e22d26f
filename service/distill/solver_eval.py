"""The subproblem solver alone, on gold Socratic decompositions.

End-to-end accuracy mixes two models: a wrong answer may come from a poor
subquestion or from a poor step. This takes the decomposer out. For each
held-out problem with a gold GSM8K Socratic decomposition it asks a solver
(any OpenAI-compatible ``/v1/chat/completions``; by default the service's
own, i.e. the embedded distilled solver with the calculator in the loop) in
the distilled solver's format (``prompts.distilled_*``), three ways:

- ``step``: the gold Q/A so far, then the next gold subquestion (teacher
  forcing). Right when the step's result, the value of its last
  ``<<expression=value>>`` annotation (else its last number), equals the gold
  step's. About 3.4 steps a problem, so it is a steadier yardstick than the
  150 end-to-end answers.
- ``chained``: the gold subquestions one by one, the solver's own earlier
  answers as the Q/A so far, then the answer step. This is what ``static``
  scores with a perfect decomposer: the ceiling a better decomposer can reach
  with this solver.
- ``final``: the whole gold Q/A, then the answer step only.

A problem needs ``steps`` right in a row to come out right, so step accuracy
*p* bounds ``chained`` near *p* to the power of the step count.
"""

from __future__ import annotations

import asyncio
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2

from service.distill.socratic import Worked, load_gold_worked
from service.evaluation.datasets import read_records
from service.evaluation.scoring import answer_correct, numbers_match, to_number
from service.pipeline import prompts
from service.pipeline.parsing import extract_answer

# The result an annotation gives: ``<<48/2=24>>`` -> 24.
_ANNOTATION = re.compile(r"<<[^<>=]*=\s*([-+]?[\d,]*\.?\d+)\s*>>")
_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?")


def step_value(step: str) -> float | None:
    """What a GSM8K step computes: its last annotation's value, else its last number."""
    found = _ANNOTATION.findall(step)
    if not found:
        found = _NUMBER.findall(re.sub(r"<<.*?>>", " ", step))
    return to_number(found[-1]) if found else None


def step_correct(step: str, gold_step: str) -> bool:
    got, want = step_value(step), step_value(gold_step)
    return got is not None and want is not None and numbers_match(got, want)


@dataclass
class ProblemResult:
    id: str
    steps: int
    steps_right: int
    chained_right: bool
    final_right: bool
    chained_answer: str
    # What the solver wrote, to read its errors: each teacher-forced step, and
    # the chain's steps then its answer step.
    step_replies: list[str]
    chain: list[str]


class _Solver:
    """One pooled client to the solver; greedy, like ``python -m service eval``."""

    def __init__(
        self, client: httpx2.AsyncClient, url: str, model: str, max_tokens: int, slots: int
    ) -> None:
        self._client, self._url, self._model = client, url, model
        self._max_tokens = max_tokens
        self._slots = asyncio.Semaphore(slots)
        self.calls = 0

    async def chat(self, messages: prompts.Messages) -> str:
        async with self._slots:
            resp = await self._client.post(
                f"{self._url}/v1/chat/completions",
                json={
                    "model": self._model,
                    "messages": messages,
                    "max_tokens": self._max_tokens,
                    "temperature": 0.0,
                },
            )
        resp.raise_for_status()
        self.calls += 1
        return str(resp.json()["choices"][0]["message"]["content"] or "").strip()


async def _one(solver: _Solver, w: Worked) -> ProblemResult:
    gold = list(w.pairs)

    async def step(k: int) -> str:
        return await solver.chat(prompts.distilled_subquestion(w.question, gold[k][0], gold[:k]))

    async def chained() -> list[str]:
        history: list[tuple[str, str]] = []
        for sub, _ in gold:
            history.append(
                (sub, await solver.chat(prompts.distilled_subquestion(w.question, sub, history)))
            )
        return [a for _, a in history] + [
            await solver.chat(prompts.distilled_final(w.question, history))
        ]

    async def final() -> bool:
        reply = await solver.chat(prompts.distilled_final(w.question, gold))
        return answer_correct(extract_answer(reply, w.question), w.answer)

    # The teacher-forced steps are independent of each other; the chain is not.
    replies, chain, final_right = await asyncio.gather(
        asyncio.gather(*(step(k) for k in range(len(gold)))), chained(), final()
    )
    answer = extract_answer(chain[-1], w.question)
    return ProblemResult(
        id=w.id,
        steps=len(gold),
        steps_right=sum(step_correct(r, s) for r, (_, s) in zip(replies, gold, strict=True)),
        chained_right=answer_correct(answer, w.answer),
        final_right=final_right,
        chained_answer=answer,
        step_replies=list(replies),
        chain=chain,
    )


def summarize(results: Sequence[ProblemResult]) -> dict[str, Any]:
    n = len(results)
    steps = sum(r.steps for r in results)
    right = sum(r.steps_right for r in results)
    p = right / steps if steps else 0.0
    return {
        "problems": n,
        "steps": steps,
        "step_accuracy": round(p, 4),
        "every_step_right": round(sum(r.steps_right == r.steps for r in results) / n, 4),
        "chained_accuracy": round(sum(r.chained_right for r in results) / n, 4),
        "chained_correct": sum(r.chained_right for r in results),
        "final_from_gold_steps": round(sum(r.final_right for r in results) / n, 4),
        # What independent steps at accuracy p would give over these problems.
        "independent_steps_bound": round(statistics.mean(p**r.steps for r in results), 4),
    }


async def evaluate_solver(
    url: str,
    data: Path,
    gold: Path,
    *,
    model: str,
    limit: int | None = None,
    concurrency: int = 8,
    max_tokens: int = 256,
    api_key: str | None = None,
    transport: httpx2.AsyncBaseTransport | None = None,
) -> tuple[dict[str, Any], list[ProblemResult]]:
    """Score the solver on the held-out problems of ``data`` found in ``gold``.

    ``data`` is a held-out split from ``distill data``/``distill socratic``
    (ids ``<stem>-<line>`` of the gold Socratic file); problems with no gold
    decomposition there (or an ambiguous one) are skipped.
    """
    ids = [str(r["id"]) for r in read_records(data) if "id" in r]
    by_id = {w.id: w for w in load_gold_worked(gold, ids)}
    worked = [by_id[i] for i in ids if i in by_id][:limit]
    if not worked:
        raise ValueError(f"no problem of {data} has a gold decomposition in {gold}")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with httpx2.AsyncClient(timeout=600, headers=headers, transport=transport) as client:
        solver = _Solver(client, url, model, max_tokens, concurrency)
        results = await asyncio.gather(*(_one(solver, w) for w in worked))
    report = summarize(results)
    report["solver_calls"] = solver.calls
    return report, list(results)


def markdown(report: dict[str, Any]) -> str:
    cols = [
        "problems", "steps", "step_accuracy", "every_step_right", "chained_accuracy",
        "final_from_gold_steps", "independent_steps_bound",
    ]  # fmt: skip
    return "\n".join(
        [
            "| " + " | ".join(cols) + " |",
            "|---" * len(cols) + "|",
            "| " + " | ".join(str(report[c]) for c in cols) + " |",
        ]
    )
