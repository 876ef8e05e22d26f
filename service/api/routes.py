"""The service's own endpoints: /solve, /decompose, /healthz, /readyz."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from service.api.auth import require_api_key
from service.api.disconnect import run_request
from service.errors import InvalidRequest
from service.metrics import CONTENT_TYPE
from service.schemas import (
    DecomposeRequest,
    DecomposeResponse,
    ErrorResponse,
    SolveRequest,
    SolveResponse,
)
from service.settings import NO_ADAPTER, Settings
from service.state import get_services

router = APIRouter()
_AUTH = [Depends(require_api_key)]

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        401: "Missing or invalid API key (when DIVCONQ_API_KEYS is set)",
        413: "Request body over DIVCONQ_MAX_BODY_BYTES",
        429: "Too many requests in flight (Retry-After)",
        422: "Invalid request (empty or too long question, unknown mode, bad cap)",
        502: "A model backend was unreachable or failed (the error names the stage)",
        503: "Decomposer not loaded yet (Retry-After)",
        504: "A model backend timed out",
    }.items()
}


def _check_limits(body: DecomposeRequest, settings: Settings) -> None:
    if len(body.question) > settings.max_question_chars:
        raise InvalidRequest(
            f"question is {len(body.question)} characters; the limit is "
            f"{settings.max_question_chars}"
        )
    if body.context is not None and len(body.context) > settings.max_context_chars:
        raise InvalidRequest(
            f"context is {len(body.context)} characters; the limit is {settings.max_context_chars}"
        )
    cap = body.max_subquestions
    if cap is not None and cap > settings.max_subquestions_limit:
        raise InvalidRequest(
            f"max_subquestions must be between 1 and {settings.max_subquestions_limit}"
        )
    adapter = body.decomposer_adapter
    if (
        adapter is not None
        and adapter != NO_ADAPTER
        and adapter not in settings.decomposer_adapters
    ):
        known = ", ".join([NO_ADAPTER, *sorted(settings.decomposer_adapters)])
        raise InvalidRequest(f"unknown decomposer_adapter {adapter!r}; available: {known}")
    if body.timeout_s is not None and body.timeout_s > settings.max_request_timeout_s:
        raise InvalidRequest(
            f"timeout_s must be at most {settings.max_request_timeout_s:g} seconds"
        )


def _timeout(body: DecomposeRequest, settings: Settings) -> float:
    return body.timeout_s or settings.request_timeout_s


def _request_id(request: Request) -> str:
    return str(request.state.request_id)


@router.post("/solve", response_model=SolveResponse, responses=_ERRORS, dependencies=_AUTH)
async def solve(body: SolveRequest, request: Request) -> SolveResponse:
    """Decompose the question and solve it in the chosen mode."""
    services = get_services(request)
    settings = services.settings
    _check_limits(body, settings)
    if body.solver is not None and body.solver not in services.solvers:
        raise InvalidRequest(
            f"unknown solver {body.solver!r}; configured: {', '.join(sorted(services.solvers))}"
        )
    mode = body.mode or settings.default_mode
    request.state.mode = mode
    services.require_ready(mode, body.solver)
    result = await run_request(
        request,
        services.pipeline.solve(
            request_id=_request_id(request),
            question=body.question,
            mode=mode,
            context=body.context,
            max_subquestions=body.max_subquestions,
            solver=body.solver,
            adapter=body.decomposer_adapter,
        ),
        _timeout(body, settings),
    )
    usage = result.usage
    request.state.log_fields = {
        "subquestions": len(result.subquestions),
        "decomposer_ms": round(usage.decomposer.latency_ms, 2),
        "decomposer_calls": usage.decomposer.calls,
        "solver_ms": round(usage.solver.latency_ms, 2),
        "solver_calls": usage.solver.calls,
        "prompt_tokens": usage.total.prompt_tokens,
        "completion_tokens": usage.total.completion_tokens,
        "answered_by": usage.solver.answered_by,
    }
    return result


@router.post("/decompose", response_model=DecomposeResponse, responses=_ERRORS, dependencies=_AUTH)
async def decompose(body: DecomposeRequest, request: Request) -> DecomposeResponse:
    """Only the decomposer's plan: the subquestions, no solving."""
    services = get_services(request)
    _check_limits(body, services.settings)
    services.require_ready("static")
    return await run_request(
        request,
        services.pipeline.decompose(
            request_id=_request_id(request),
            question=body.question,
            context=body.context,
            max_subquestions=body.max_subquestions,
            adapter=body.decomposer_adapter,
        ),
        _timeout(body, services.settings),
    )


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus text format: the service's families and the engine's ``vllm:`` ones."""
    return Response(get_services(request).metrics.exposition(), media_type=CONTENT_TYPE)


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
            "adapters": sorted(s.decomposer_adapters),
            "default_adapter": s.default_adapter,
        },
        "solvers": {
            name: {
                "backend": p.backend,
                "model": s.solver_model(p),
                "base_url": s.solver_url(p) if p.backend != "anthropic" else p.base_url,
                "fallbacks": p.fallbacks,
                "default": name == s.default_solver,
            }
            for name, p in s.solver_profiles.items()
        },
        "in_flight": in_flight,
        "max_in_flight": s.max_in_flight,
        "saturated": in_flight >= s.max_in_flight,
    }
    return JSONResponse(body, status_code=200 if ready else 503)
