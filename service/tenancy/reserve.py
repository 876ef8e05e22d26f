"""The most tokens a plan can spend: what tokens-per-minute admission reserves.

An upper bound, so that the tokens admitted in a minute never exceed the
key's limit (settlement then gives back what the request did not use):

- completions: every call the mode can make, each at its ``max_tokens`` cap;
- prompts: each call's prompt is at most the question and context (counted
  as UTF-8 bytes: a byte-level tokenizer never makes more tokens than bytes),
  the template (``DIVCONQ_LIMITS__PROMPT_OVERHEAD_TOKENS``) and everything the
  request generated before it.
"""

from __future__ import annotations

from service.core.settings import Settings
from service.pipeline.plan import Plan


def _solver_cap(plan: Plan, settings: Settings) -> int:
    """The largest ``max_tokens`` among the plan's solver profile and its fallbacks."""
    if plan.solver is None:
        return 0
    profiles = settings.solver_profiles
    chain = [plan.solver.name, *profiles[plan.solver.name].fallbacks]
    return max(settings.solver_tokens(profiles[name]) for name in chain)


def calls(plan: Plan, settings: Settings) -> list[int]:
    """The ``max_tokens`` of every call the plan can make, worst case."""
    d = settings.decomposer
    solver = _solver_cap(plan, settings)
    if plan.mode is None:  # /decompose
        return [d.max_tokens]
    if plan.mode == "direct":
        return [solver]
    if plan.mode == "hinted":
        return [d.max_tokens, solver]
    if plan.mode == "socratic":
        return [d.socratic_max_tokens] * plan.cap + [solver] * (plan.cap + 1)
    return [d.max_tokens] + [solver] * (plan.cap + 1)  # static


def reserve_tokens(plan: Plan, settings: Settings) -> int:
    caps = calls(plan, settings)
    given = len(plan.question.encode()) + len((plan.context or "").encode())
    prompt = given + settings.limits.prompt_overhead_tokens
    total, generated = 0, 0
    for cap in caps:
        total += prompt + generated + cap
        generated += cap
    return total
