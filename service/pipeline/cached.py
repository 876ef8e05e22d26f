"""A whole ``/solve`` in the response cache: what its key holds, how a hit is replayed.

The key is everything a whole answer depends on (question, context, mode,
cap, adapter, the decomposer's model and sampling, the solver profile and
every member of its chain); a hit is the stored answer under this request's
id and time, with nothing spent (``SolveResponse.cached``).
"""

from __future__ import annotations

from typing import Any

from service.core.schemas import SolveResponse, SolveUsage, StageUsage, TokenUsage, TotalUsage
from service.core.settings import Settings
from service.pipeline.plan import Plan


def solve_key(settings: Settings, decomposer_model: str, plan: Plan) -> dict[str, Any] | None:
    """What a whole ``/solve``'s answer depends on; None where it is not to be cached
    (the policy says no, or a model samples above temperature 0 and no ``"cache": true``)."""
    d, chain = settings.decomposer, plan.solver
    assert chain is not None, "a /decompose plan has no solver"
    deterministic = chain.deterministic and d.temperature == 0.0
    if not plan.cache.used or not (deterministic or plan.cache.force):
        return None
    return {
        "question": plan.question,
        "context": plan.context,
        "mode": plan.mode,
        "cap": plan.cap,
        "adapter": plan.adapter,
        "decomposer": {
            "backend": d.backend,
            "model": decomposer_model,
            "max_tokens": d.max_tokens,
            "socratic_max_tokens": d.socratic_max_tokens,
            "temperature": d.temperature,
        },
        "solver": {"profile": chain.name, "members": chain.identity},
        "prompts": plan.prompts.name,
    }


def _spent_nothing(usage: StageUsage) -> StageUsage:
    return usage.model_copy(
        update={
            "cached_calls": usage.calls + usage.cached_calls,
            "calls": 0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "cost_usd": 0.0,
            "latency_ms": 0.0,
            "estimated": False,
        }
    )


def replayed(cached: SolveResponse, request_id: str, latency_ms: float) -> SolveResponse:
    """A cached ``/solve`` answer as this request's: its own id and time, nothing spent."""
    usage = cached.usage
    return cached.model_copy(
        update={
            "id": request_id,
            "cached": True,
            "latency_ms": latency_ms,
            "subquestions": [
                s.model_copy(
                    update={
                        "latency_ms": 0.0,
                        "usage": TokenUsage(prompt_tokens=0, completion_tokens=0),
                    }
                )
                for s in cached.subquestions
            ],
            "usage": SolveUsage(
                decomposer=_spent_nothing(usage.decomposer),
                solver=_spent_nothing(usage.solver),
                total=TotalUsage(prompt_tokens=0, completion_tokens=0, cost_usd=0.0),
            ),
        }
    )
