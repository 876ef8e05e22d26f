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


# json's messages, in words: what the parser expected where it stopped.
_JSON_EXPECTED = {
    "Expecting value": "a value (a string, number, object, array, true, false or null)",
    "Expecting property name enclosed in double quotes": "a property name in double quotes",
    "Expecting ',' delimiter": "a comma between two items, or the closing bracket",
    "Expecting ':' delimiter": "a colon after the property name",
    "Extra data": "the end of the body: there is more after the JSON value",
    "Unterminated string starting at": "the closing double quote of the string",
    "Invalid control character at": "no raw control character in a string (write \\n, \\t)",
    "Invalid \\escape": "a valid escape sequence in the string",
    "Invalid \\uXXXX escape": "four hex digits after \\u",
}


def _json_error(doc: Any, pos: Any, msg: str) -> str:
    """Malformed JSON: where (line, column) and what was expected, in words."""
    text = doc if isinstance(doc, str) else ""
    at = pos if isinstance(pos, int) and 0 <= pos <= len(text) else 0
    line = text.count("\n", 0, at) + 1
    column = at - (text.rfind("\n", 0, at) + 1) + 1
    expected = _JSON_EXPECTED.get(msg, msg[:1].lower() + msg[1:])
    return f"the body is not valid JSON: at line {line}, column {column}, expected {expected}"


def _not_json(request: Request) -> str:
    given = request.headers.get("content-type")
    sent = f"this one was sent as {given!r}" if given else "this one has no Content-Type"
    return f"the body must be JSON sent with 'Content-Type: application/json'; {sent}"


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";")[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _describe_validation(exc: RequestValidationError, request: Request) -> str:
    errors = exc.errors()
    for err in errors:
        if err.get("type") == "json_invalid":
            loc = err.get("loc", ())
            return _json_error(
                exc.body, loc[-1] if loc else 0, str(err.get("ctx", {}).get("error", ""))
            )
    whole = [err for err in errors if tuple(err.get("loc", ())) == ("body",)]
    if whole and not _is_json(request.headers.get("content-type")):
        return _not_json(request)
    if any(err.get("type") == "missing" for err in whole):
        return "the body is empty: send a JSON object with 'Content-Type: application/json'"
    parts = []
    for err in errors:
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
        return error_response(422, "invalid_request", _describe_validation(exc, request))

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
