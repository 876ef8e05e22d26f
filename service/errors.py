"""The service's one exception hierarchy.

Every error a client can see is a ``ServiceError`` subclass carrying its HTTP
status and a stable ``type``; ``service.api.errors`` maps them to JSON in one
place. Messages must never contain secrets or tracebacks.
"""

from __future__ import annotations


class ServiceError(Exception):
    status_code = 500
    error_type = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        stage: str | None = None,
        headers: dict[str, str] | None = None,
        kind: str | None = None,
        retryable: bool = False,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.stage = stage
        self.headers = headers or {}
        # Finer than the type, for metrics: timeout, connect_error, http_error, ...
        self.kind = kind or self.error_type
        # For the solver's retry loop: may the same call succeed if repeated,
        # and after how long does the server ask us to wait?
        self.retryable = retryable
        self.retry_after_s = retry_after_s


class Unauthorized(ServiceError):
    status_code = 401
    error_type = "unauthorized"


class InvalidRequest(ServiceError):
    status_code = 422
    error_type = "invalid_request"


class PayloadTooLarge(ServiceError):
    status_code = 413
    error_type = "payload_too_large"


class NotReady(ServiceError):
    """The decomposer is still loading (or failed to load)."""

    status_code = 503
    error_type = "not_ready"


class UpstreamError(ServiceError):
    """A model backend was unreachable, failed, or answered nonsense."""

    status_code = 502
    error_type = "upstream_error"


class UpstreamTimeout(ServiceError):
    status_code = 504
    error_type = "upstream_timeout"
