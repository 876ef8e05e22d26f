"""A local checkpoint as teacher: vLLM offline, several samples per problem.

The checkpoint is prompted the way the service prompts a distilled decomposer
(a merged ``distill train --merge`` output, or any model that learned that
format). Each problem gets ``samples`` decompositions at ``temperature``; the
first one that passes the recipe's checks is kept:

- SD-T: it parses and has no repeated or near-duplicate subquestion;
- SD-C: also, its count equals the number of steps in the problem's gold
  solution (GSM8K answers have one line per step), so the student learns how
  many subquestions a problem takes from far more problems than have gold
  decompositions. One sample in several has the right count even when the
  greedy one has not, which is what this recipe keeps.

Sampling takes 8-25 minutes per thousand problems on a 2-core CPU (4
samples each; docs/distillation.md), so it resumes: with ``progress`` set,
every finished chunk's outcome (kept or not) is appended to that JSONL file,
and a run with the same teacher and sampling settings skips the problems
already there.

Runs in this process; vLLM starts its engine in a spawned child, so callers
need a ``__main__`` guard (the CLI has one).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from service.distill.data import Example, acceptable
from service.pipeline import prompts
from service.pipeline.parsing import parse_decomposition

log = logging.getLogger(__name__)
LOCAL_RECIPES = ("sd-t", "sd-c")


def pick(
    texts: Sequence[str], *, recipe: str, steps: int | None, max_subquestions: int
) -> list[str] | None:
    """The first sampled decomposition the recipe keeps, or None."""
    for text in texts:
        subs, repeats = parse_decomposition(text, max_subquestions)
        if acceptable(subs, repeats, recipe=recipe, steps=steps):
            return subs
    return None


# Texts of each problem's samples, for a chunk of prompts.
Sampler = Callable[[list[str]], list[list[str]]]


def local_decompositions(
    examples: Sequence[Example],
    model_dir: str,
    *,
    recipe: str,
    samples: int = 4,
    temperature: float = 0.8,
    max_subquestions: int = 8,
    seed: int = 0,
    chunk: int = 200,
    engine_args: dict[str, Any] | None = None,
    progress: Path | None = None,
) -> list[Example]:
    if recipe not in LOCAL_RECIPES:
        raise ValueError(f"a local teacher's recipe must be one of {LOCAL_RECIPES}")
    from vllm import LLM, SamplingParams

    llm = LLM(model=model_dir, seed=seed, **(engine_args or {"enforce_eager": True}))
    params = SamplingParams(
        n=samples,
        temperature=temperature,
        max_tokens=32 * max_subquestions,
        stop=prompts.static_stop(max_subquestions),
    )

    def sample(texts: list[str]) -> list[list[str]]:
        outputs = llm.generate(texts, params, use_tqdm=False)
        return [[o.text for o in out.outputs] for out in outputs]

    settings = {
        "teacher": model_dir,
        "recipe": recipe,
        "samples": samples,
        "temperature": temperature,
        "max_subquestions": max_subquestions,
        "seed": seed,
    }
    return decompose_in_chunks(
        examples,
        sample,
        recipe=recipe,
        max_subquestions=max_subquestions,
        meta={"teacher": model_dir, "samples": samples},
        chunk=chunk,
        progress=progress,
        settings=settings,
    )


def _resume(progress: Path, settings: dict[str, Any]) -> dict[str, list[str] | None]:
    """Outcomes already on file for these settings; a file for others starts over."""
    if progress.is_file():
        lines = progress.read_text().splitlines()
        if lines and json.loads(lines[0]) == {"settings": settings}:
            done: dict[str, list[str] | None] = {}
            for line in lines[1:]:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    break  # a line cut short when the last run was killed
                done[str(record["id"])] = record["subquestions"]
            # Rewrite without a torn tail, so appends start on a fresh line.
            _write_progress(progress, settings, done)
            return done
        log.info(f"local teacher: {progress} holds other settings; starting over")
    _write_progress(progress, settings, {})
    return {}


def _write_progress(
    progress: Path, settings: dict[str, Any], done: dict[str, list[str] | None]
) -> None:
    progress.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"settings": settings})]
    lines += [json.dumps({"id": i, "subquestions": subs}) for i, subs in done.items()]
    progress.write_text("\n".join(lines) + "\n")


def decompose_in_chunks(
    examples: Sequence[Example],
    sample: Sampler,
    *,
    recipe: str,
    max_subquestions: int,
    meta: dict[str, Any],
    chunk: int = 200,
    progress: Path | None = None,
    settings: dict[str, Any] | None = None,
) -> list[Example]:
    """Sample each problem's decompositions chunk by chunk; keep what ``recipe`` keeps."""
    done = _resume(progress, settings or {}) if progress is not None else {}
    if done:
        log.info(f"local teacher: resuming, {len(done)} problems already sampled")
    todo = [ex for ex in examples if ex.id not in done]
    started = time.monotonic()
    for start in range(0, len(todo), chunk):
        part = todo[start : start + chunk]
        texts = sample([prompts.distilled_decomposition(ex.question) for ex in part])
        outcomes = {
            ex.id: pick(
                out,
                recipe=recipe,
                steps=ex.meta.get("steps"),
                max_subquestions=max_subquestions,
            )
            for ex, out in zip(part, texts, strict=True)
        }
        done |= outcomes
        if progress is not None:
            with progress.open("a") as fh:
                for ex_id, subs in outcomes.items():
                    fh.write(json.dumps({"id": ex_id, "subquestions": subs}) + "\n")
        # Minutes per chunk on a CPU: say how far it got.
        log.info(
            f"local teacher: {len(examples) - len(todo) + start + len(part)}/{len(examples)} "
            f"problems, kept {sum(s is not None for s in done.values())}, "
            f"{time.monotonic() - started:.0f} s"
        )
    kept = []
    for ex in examples:
        subs = done.get(ex.id)
        if subs is not None:
            kept.append(Example(ex.id, ex.question, ex.answer, subs, recipe, meta | ex.meta))
    return kept
