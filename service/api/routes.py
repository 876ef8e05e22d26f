"""The service's own endpoints: /solve, /decompose, /healthz, /readyz."""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from service.api.auth import require_api_key
from service.api.disconnect import run_request, within_deadline
from service.api.errors import ERRORS, error_json
from service.api.request_record import record_of
from service.api.solving import log_fields, plan_request
from service.api.state import Services, get_services
from service.api.streaming import EventStream, sse
from service.core.schemas import (
    AnswerEvent,
    DecomposeRequest,
    DecomposeResponse,
    DoneEvent,
    SolveRequest,
    SolveResponse,
)
from service.pipeline.plan import Plan

router = APIRouter()
_AUTH = [Depends(require_api_key)]


# Streamed /solve: event name -> the model of its data.
EVENTS = {
    "decomposition": "DecompositionEvent",
    "subquestion": "SubquestionEvent",
    "answer_delta": "AnswerDeltaEvent",
    "answer": "AnswerEvent",
    "usage": "SolveUsage",
    "error": "ErrorResponse",
    "done": "DoneEvent",
}
_STREAM = {
    "description": 'With "stream": true, server-sent events: decomposition, subquestion '
    "(each), answer_delta (the final answer's text as the solver writes it; the pieces "
    "add up to answer_text), answer, usage, error (a failure after the stream began), done.",
    # One server-sent event; its data is the JSON of that event's model.
    "content": {
        "text/event-stream": {
            "schema": {
                "type": "object",
                "properties": {
                    "event": {"enum": list(EVENTS)},
                    "data": {"type": "string", "contentMediaType": "application/json"},
                },
                "required": ["event", "data"],
            }
        }
    },
}


@router.post(
    "/solve",
    response_model=SolveResponse,
    responses={**ERRORS, 200: _STREAM},
    dependencies=_AUTH,
)
async def solve(body: SolveRequest, request: Request) -> SolveResponse | EventStream:
    """Decompose the question and solve it in the chosen mode."""
    services, plan = await plan_request(body, request)
    if body.stream:
        return _solve_stream(request, services, plan)
    rec = record_of(request)
    result = await run_request(
        request, services.pipeline.solve(plan, request_id=rec.request_id), plan.timeout_s
    )
    rec.log_fields = log_fields(result)
    rec.result = result
    return result


def _solve_stream(request: Request, services: Services, plan: Plan) -> EventStream:
    """``/solve`` as server-sent events: the same pipeline run, its progress as it happens."""
    rec = record_of(request)
    request_id = rec.request_id
    started = time.perf_counter()
    latency_ms: float | None = None
    rec.log_fields = {"stream": True}

    async def work(emit: Callable[[bytes], None]) -> None:
        nonlocal latency_ms

        def event(name: str, data: BaseModel) -> None:
            emit(sse(name, data.model_dump_json()))

        result = await within_deadline(
            services.pipeline.solve(plan, request_id=request_id, events=event), plan.timeout_s
        )
        latency_ms = result.latency_ms
        rec.log_fields = {"stream": True, **log_fields(result)}
        rec.result = result
        event("answer", AnswerEvent(**dict(result)))
        event("usage", result.usage)

    def done() -> bytes:
        ms = latency_ms if latency_ms is not None else (time.perf_counter() - started) * 1000.0
        return sse("done", DoneEvent(id=request_id, latency_ms=ms).model_dump_json())

    return EventStream(work, error=lambda exc: sse("error", error_json(exc)), close=done)


@router.post("/decompose", response_model=DecomposeResponse, responses=ERRORS, dependencies=_AUTH)
async def decompose(body: DecomposeRequest, request: Request) -> DecomposeResponse:
    """Only the decomposer's plan: the subquestions, no solving."""
    services, plan = await plan_request(body, request)
    result = await run_request(
        request,
        services.pipeline.decompose(plan, request_id=record_of(request).request_id),
        plan.timeout_s,
    )
    record_of(request).result = result
    return result


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """The service's families and the engine's ``vllm:`` ones: Prometheus text format, or
    OpenMetrics (with the latency histograms' trace exemplars) when the scraper asks."""
    body, content_type = get_services(request).metrics.render(request.headers.get("accept", ""))
    return Response(body, media_type=content_type)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Readiness: the decomposer is loaded and a solver is configured.

    Saturation (requests in flight at the limit) is reported but keeps 200:
    the 429s already shed load, and flapping readiness would only move it.
    """
    services = get_services(request)
    s = services.settings
    ready = services.decomposer.ready
    engine = services.engine
    in_flight = services.metrics.active
    body = {
        "status": "ready" if ready else "not_ready",
        "decomposer": {
            "backend": s.decomposer.backend,
            "model": services.decomposer.model_name,
            "state": services.decomposer.state,
            "engine_requests": engine.unfinished_requests if engine else None,
            "adapters": services.adapters.names,
            "default_adapter": services.adapters.default,
            # The resolved engine settings (dtype, OpenMP binding) and the CPU.
            "engine": engine.hardware.as_dict() if engine and engine.hardware else None,
            # Embedded default: the adapter folded into the served weights, and
            # the base checkpoint's engine ('lazy' until a request needs it).
            "distilled": getattr(services.decomposer, "distilled", None),
            "base_engine": getattr(services.decomposer, "base_engine_state", None),
        },
        "solvers": {
            name: {
                "backend": p.backend,
                "model": s.solver_model(p),
                # None for the embedded solver (in process) and Anthropic's default.
                "base_url": p.base_url,
                # What each call is sent with, defaults resolved: the truth to check.
                "max_tokens": s.solver_tokens(p),
                "stop": s.solver_stop(p),
                "prompts": s.solver_prompts(p),
                "fallbacks": p.fallbacks,
                "default": name == s.default_solver,
            }
            for name, p in s.solver_profiles.items()
        },
        "in_flight": in_flight,
        "max_in_flight": s.max_in_flight,
        "saturated": in_flight >= s.max_in_flight,
        # Where per-key limits are counted; an unreachable store keeps 200
        # (DIVCONQ_LIMITS__ON_STORE_ERROR decides what requests get).
        "limits": await services.limiter.status(),
        "keys": len(s.api_keys),
        # The response cache's store, and the ledger's: where rows go, how many
        # wait, whether the last batch was written (a failing database keeps 200).
        "cache": {"enabled": s.cache.enabled, "store": services.cache.store.kind},
        "ledger": services.ledger.status() if services.ledger else {"enabled": False},
    }
    return JSONResponse(body, status_code=200 if ready else 503)
