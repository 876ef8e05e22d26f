"""What the routes that run the pipeline share: ``/solve``, ``/decompose`` and the facade.

``routes.py`` (the service's own endpoints) and ``facade.py`` (the pipeline
behind OpenAI's chat API) both resolve a request into a plan and record the
same access-log facts about its result; the error handlers label a facade
request whose body failed its schema. Those helpers live here, below all
three, so no route module imports another.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from starlette.requests import Request

from service.api.caller import key_name
from service.api.limits import admit
from service.api.request_record import record_of
from service.api.state import Services, get_services
from service.cache import CachePolicy
from service.core.schemas import DecomposeRequest, SolveRequest, SolveResponse
from service.pipeline.plan import Plan, resolve

# The facade's endpoint label (metrics, access log).
FACADE_ENDPOINT = "chat_completions"
FACADE_PATH = "/v1/chat/completions"


def log_fields(result: SolveResponse) -> dict[str, Any]:
    """The access log's facts about a solved request (the record's ``log_fields``)."""
    usage = result.usage
    return {
        "subquestions": len(result.subquestions),
        "decomposer_ms": round(usage.decomposer.latency_ms, 2),
        "decomposer_calls": usage.decomposer.calls,
        "solver_ms": round(usage.solver.latency_ms, 2),
        "solver_calls": usage.solver.calls,
        "prompt_tokens": usage.total.prompt_tokens,
        "completion_tokens": usage.total.completion_tokens,
        "answered_by": usage.solver.answered_by,
        "estimated_usage": usage.solver.estimated or usage.decomposer.estimated,
    }


async def plan_request(body: DecomposeRequest, request: Request) -> tuple[Services, Plan]:
    """Resolve and admit a request (``/solve``, ``/decompose``, the facade): any 422
    (a prompt too long for its model's window included), 503 or per-key 429 before
    work starts; the record learns its mode. A solve request also gets its
    response-cache policy (``/decompose`` is never cached)."""
    services = get_services(request)
    plan = resolve(body, services)
    rec = record_of(request)
    rec.mode = plan.mode
    services.require_ready(plan)
    # Before admission: a request no model can take spends none of the key's limits.
    await services.budget.check(plan)
    await admit(request, services, plan)
    if not isinstance(body, SolveRequest):
        rec.plan = plan
        return services, plan
    shared = services.settings.cache.shared
    policy = CachePolicy.of(
        "shared" if shared else key_name(request),
        body.cache,
        request.headers.get("cache-control", ""),
    )
    rec.plan = plan = dataclasses.replace(plan, cache=policy)
    return services, plan


def claim_for_facade(request: Request, body: Any) -> None:
    """Count as the facade's a pipeline-model request whose body failed its schema (a
    422 before any handler ran), as /solve's 422s are counted."""
    model = body.get("model") if isinstance(body, dict) else None
    pipeline = get_services(request).settings.pipeline_models
    if request.url.path == FACADE_PATH and isinstance(model, str) and model in pipeline:
        record_of(request).endpoint = FACADE_ENDPOINT
