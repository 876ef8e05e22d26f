"""What a failure writes on a span: ``error.type`` and the status, the same whoever ends it
(a child span of ours as it exits, the SDK's through ``tracing``, the server span)."""

from __future__ import annotations

from opentelemetry.trace import Span, Status, StatusCode

from service.core.errors import ServiceError, UpstreamError, UpstreamStatusError
from service.observability.semconv import ERROR_TYPE


def error_type(exc: BaseException, call: bool = False) -> str:
    """``error.type``, low-cardinality. A model call's: the HTTP status or the failure
    kind (timeout, connect_error, ...); otherwise the error body's type, or the class."""
    if call and isinstance(exc, UpstreamStatusError):
        return str(exc.status)
    if call and isinstance(exc, UpstreamError):
        return exc.outcome
    if isinstance(exc, ServiceError):
        return exc.error_type
    return type(exc).__qualname__


def record_error(span: Span, exc: BaseException, call: bool = False) -> None:
    """Mark ``span`` failed by ``exc``; ``call``: the span of one model call."""
    span.set_attribute(ERROR_TYPE, error_type(exc, call))
    if isinstance(exc, ServiceError):
        span.set_status(Status(StatusCode.ERROR, exc.message))
    else:
        # Unexpected: keep the traceback with the span.
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, type(exc).__qualname__))
