"""The one place where exceptions become HTTP responses.

Handlers raise; pure-ASGI middleware (413, 429) sends ``service_error_response``
of the same exception types, so every error body is built here.

Every error body is ``{"error": {"type", "message", "stage"?, "trace_id"?,
"span_id"?}}``: in a traced request the ids of its server span, to look the
trace up. Unexpected
exceptions become a generic 500 whose message points at the logs; the
traceback goes to the log, never to the client.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.api.request_record import record_of
from service.api.solving import claim_for_facade
from service.core.errors import ServiceError
from service.core.schemas import ErrorResponse
from service.observability.tracing import ids

log = logging.getLogger(__name__)

# The error answers every API operation documents in /openapi.json.
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        401: "Missing or invalid API key (when DIVCONQ_API_KEYS is set)",
        413: "Request body over DIVCONQ_MAX_BODY_BYTES",
        429: "Too many requests in flight, or the key is over a limit: rate_limit_exceeded, "
        "token_limit_exceeded, budget_exceeded (Retry-After)",
        422: "Invalid request (empty or too long question, unknown mode, bad cap)",
        499: "The client closed the connection (recorded, never answered)",
        502: "A model backend was unreachable or failed (the error names the stage)",
        503: "Decomposer not loaded yet, or the limits store is unreachable and "
        "DIVCONQ_LIMITS__ON_STORE_ERROR is deny (Retry-After)",
        504: "A model backend timed out",
    }.items()
}

_HTTP_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}


def error_response(
    status: int,
    error_type: str,
    message: str,
    *,
    stage: str | None = None,
    headers: dict[str, str] | None = None,
    trace: dict[str, str] | None = None,
) -> JSONResponse:
    body = _body(error_type, message, stage, trace)
    return JSONResponse(body, status_code=status, headers=headers)


def _body(
    error_type: str, message: str, stage: str | None, trace: dict[str, str] | None = None
) -> dict[str, dict[str, str]]:
    body = {"type": error_type, "message": message}
    if stage:
        body["stage"] = stage
    body.update(ids() if trace is None else trace)
    return {"error": body}


def error_json(exc: ServiceError) -> str:
    """A ``ServiceError`` as the error body's JSON (a streamed error event)."""
    return json.dumps(_body(exc.error_type, exc.message, exc.stage))


def service_error_response(exc: ServiceError) -> JSONResponse:
    """The response for a ``ServiceError``: from a handler or from ASGI middleware."""
    return error_response(
        exc.status_code, exc.error_type, exc.message, stage=exc.stage, headers=exc.headers
    )


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        msg = str(err.get("msg", "invalid"))
        if err.get("type") == "extra_forbidden":
            msg = "unknown field"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        if exc.status_code >= 500:
            log.warning("request failed: %s", exc.message, extra={"status": exc.status_code})
        return service_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        claim_for_facade(request, exc.body)
        return error_response(422, "invalid_request", _describe_validation(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(
            exc.status_code,
            _HTTP_TYPES.get(exc.status_code, "http_error"),
            str(exc.detail),
            headers=dict(exc.headers or {}),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        rec = record_of(request)
        rid = rec.request_id
        # This handler runs outside the server span: the span left its ids.
        trace = rec.trace_ids
        log.exception("unhandled error", extra={"request_id": rid, **trace})
        return error_response(
            500,
            "internal_error",
            f"internal error; see the service log for request {rid}",
            trace=trace,
        )
