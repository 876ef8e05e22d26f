"""Decomposition datasets for distillation, in chat format.

One JSONL line per problem::

    {"id": "gsm8k-socratic-12", "source": "gold|sd-t|sd-r|sd-c", "question": "...",
     "answer": "18", "subquestions": ["...", "..."],
     "messages": [{"role": "user", "content": <distilled prompt>},
                  {"role": "assistant", "content": <numbered subquestions>}]}

Sources:

- gold: GSM8K Socratic answers (``subquestion ** step`` lines) import directly;
- teacher: any configured solver writes decompositions with the service's own
  decomposer prompt; SD-T keeps every parseable one, SD-R only those whose
  teacher-solved answer (one hinted call) matches the gold answer, SD-C only
  those with as many subquestions as the gold solution has steps;
- a local checkpoint sampled several times per problem (``local_teacher``).

Teacher outputs with a repeated or near-duplicate subquestion are dropped: a
student learns to repeat from them.

Problems are deduplicated by normalized question, the few-shot problems of
``service/pipeline/prompts.py`` are excluded, and a seeded held-out split is written
beside the training split.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.core.completion import ChatCall
from service.evaluation.datasets import final_answer, socratic_steps, solution_steps
from service.evaluation.scoring import answer_correct, has_duplicate
from service.pipeline import prompts
from service.pipeline.parsing import extract_answer, normalize, parse_decomposition

RECIPES = ("sd-t", "sd-r", "sd-c")


@dataclass
class Example:
    id: str
    question: str
    answer: str
    subquestions: list[str]
    source: str
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "source": self.source,
            "question": self.question,
            "answer": self.answer,
            "subquestions": self.subquestions,
            "messages": [
                {"role": "user", "content": prompts.distilled_decomposition(self.question)},
                {"role": "assistant", "content": prompts.distilled_target(self.subquestions)},
            ],
            **({"meta": self.meta} if self.meta else {}),
        }


def gold_answer(answer_field: str) -> str:
    """A row's answer: GSM8K's ``#### N`` value, else the field itself (generic JSONL)."""
    return final_answer(answer_field) or answer_field.strip().replace(",", "")


def acceptable(subs: Sequence[str], repeats: int, *, recipe: str, steps: int | None) -> bool:
    """Whether a teacher's decomposition may train the student under ``recipe``."""
    if not subs or repeats or has_duplicate(subs):
        return False
    # SD-C needs the gold step count; a problem without one keeps nothing.
    return recipe != "sd-c" or len(subs) == steps


def load_gold(path: Path) -> list[Example]:
    """GSM8K Socratic JSONL -> examples with the gold subquestions."""
    examples = []
    with path.open() as fh:
        for line_no, line in enumerate(fh):
            if line_no in prompts.FEWSHOT_SOURCE_INDICES or not line.strip():
                continue
            row = json.loads(line)
            # A few gold decompositions repeat a subquestion; a student taught
            # that would repeat too.
            subs = list(dict.fromkeys(socratic_steps(row["answer"])))
            examples.append(
                Example(
                    id=f"{path.stem}-{line_no}",
                    question=row["question"].strip(),
                    answer=gold_answer(row["answer"]),
                    subquestions=subs,
                    source="gold",
                )
            )
    return examples


def load_questions(path: Path) -> list[Example]:
    """Any JSONL with ``question`` and ``answer`` (GSM8K style): no subquestions yet."""
    out = []
    with path.open() as fh:
        for line_no, line in enumerate(fh):
            if line.strip():
                row = json.loads(line)
                answer = str(row.get("answer", ""))
                steps = solution_steps(answer)
                out.append(
                    Example(
                        id=f"{path.stem}-{line_no}",
                        question=str(row["question"]).strip(),
                        answer=gold_answer(answer),
                        subquestions=[],
                        source="question",
                        meta={"steps": steps} if steps else {},
                    )
                )
    return out


# Recorded questions have no gold answer or step count: only SD-T keeps a
# teacher's decomposition without checking one.
LEDGER_RECIPES = ("sd-t",)


def load_ledger(url: str, since: float, until: float) -> list[Example]:
    """The questions a deployment was asked (``DIVCONQ_LEDGER__CONTENT=true`` rows that
    answered 200), oldest first, as problems for a teacher: no answer, no subquestions."""
    from service.ledger import open_store

    async def read() -> list[tuple[str, str | None]]:
        store = open_store(url)
        await store.open()
        try:
            return await store.questions(since, until)
        finally:
            await store.aclose()

    return [
        Example(id=f"ledger-{i}", question=q.strip(), answer="", subquestions=[], source="ledger")
        for i, (q, _context) in enumerate(asyncio.run(read()))
        if q.strip()
    ]


def dedupe(examples: Iterable[Example]) -> list[Example]:
    seen: set[str] = set()
    few_shot = {normalize(e.question) for e in prompts.EXAMPLES}
    out = []
    for ex in examples:
        key = normalize(ex.question)
        if key in seen or key in few_shot:
            continue
        seen.add(key)
        out.append(ex)
    return out


def split(
    examples: Sequence[Example], held_out: int, seed: int
) -> tuple[list[Example], list[Example]]:
    order = list(examples)
    random.Random(seed).shuffle(order)
    return order[held_out:], order[:held_out]


def write_dataset(out_dir: Path, train: Sequence[Example], held: Sequence[Example]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.jsonl", train), ("held_out.jsonl", held)):
        with (out_dir / name).open("w") as fh:
            for ex in rows:
                fh.write(json.dumps(ex.to_json()) + "\n")


def read_dataset(path: Path) -> list[dict[str, Any]]:
    with path.open() as fh:
        return [json.loads(line) for line in fh if line.strip()]


async def teacher_decompositions(
    examples: Sequence[Example],
    solver: Any,
    *,
    recipe: str,
    max_subquestions: int,
    concurrency: int = 8,
) -> list[Example]:
    """Ask the teacher (a SolverChain) to decompose each problem; SD-R also checks answers."""
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {RECIPES}")
    slots = asyncio.Semaphore(concurrency)
    kept: list[Example] = []

    async def one(ex: Example) -> None:
        async with slots:
            prompt = prompts.static_decomposition(ex.question)
            messages = [
                {
                    "role": "system",
                    "content": "Continue the pattern: write the numbered subquestions for the "
                    "last problem, then stop.",
                },
                {"role": "user", "content": prompt},
            ]
            plan = await solver.chat(ChatCall(messages, f"distill-{ex.id}"))
            subs, repeats = parse_decomposition(plan.text, max_subquestions)
            if not acceptable(subs, repeats, recipe=recipe, steps=ex.meta.get("steps")):
                return
            meta: dict[str, Any] = {"teacher": solver.model_name} | ex.meta
            if recipe == "sd-r":
                final = await solver.chat(
                    ChatCall(prompts.hinted(ex.question, subs), f"distill-{ex.id}-r")
                )
                predicted = extract_answer(final.text, ex.question)
                meta["teacher_answer"] = predicted
                if not answer_correct(predicted, ex.answer):
                    return
            kept.append(Example(ex.id, ex.question, ex.answer, subs, source=recipe, meta=meta))

    await asyncio.gather(*(one(ex) for ex in examples))
    kept.sort(key=lambda e: e.id)
    return kept
