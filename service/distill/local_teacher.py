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

Runs in this process; vLLM starts its engine in a spawned child, so callers
need a ``__main__`` guard (the CLI has one).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from service import prompts
from service.distill.data import Example, acceptable
from service.parsing import parse_decomposition

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
    kept: list[Example] = []
    started = time.monotonic()
    for start in range(0, len(examples), chunk):
        part = examples[start : start + chunk]
        outputs = llm.generate(
            [prompts.distilled_decomposition(ex.question) for ex in part], params, use_tqdm=False
        )
        for ex, out in zip(part, outputs, strict=True):
            steps = ex.meta.get("steps")
            subs = pick(
                [o.text for o in out.outputs],
                recipe=recipe,
                steps=steps,
                max_subquestions=max_subquestions,
            )
            if subs is not None:
                meta = {"teacher": model_dir, "samples": samples} | ex.meta
                kept.append(Example(ex.id, ex.question, ex.answer, subs, recipe, meta))
        # Minutes per chunk on a CPU: say how far it got.
        log.info(
            f"local teacher: {start + len(part)}/{len(examples)} problems, kept {len(kept)}, "
            f"{time.monotonic() - started:.0f} s"
        )
    return kept
