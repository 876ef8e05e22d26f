"""The service's one exception hierarchy.

Every error a client can see is a ``ServiceError`` subclass carrying its HTTP
status and a stable ``type``; ``service.api.errors`` maps them to JSON in one
place. Messages must never contain secrets or tracebacks.

Upstream failures form a tree, after httpx's: the type says what failed, so
retry policy and metrics decide from ``isinstance``, never from a string::

    UpstreamError                  502  a model backend failed (base)
    +-- UpstreamConnectError       502  refused, reset, dropped mid-response
    +-- UpstreamStatusError        502  HTTP >= 400 (``status``, ``retry_after_s``);
                                        the pipeline answers 400/413/422 as 422
    +-- UpstreamInvalidResponse    502  bad JSON, no choices
    +-- UpstreamTimeout            504  a call passed its timeout
        +-- DeadlineExceeded       504  the request passed its deadline

Backends raise them without knowing why they were called; the pipeline
attaches the stage (``decompose``, ``solve``, ``final``) once, where it makes
the call (``UpstreamError.during``).
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
    ) -> None:
        super().__init__(message)
        self.message = message
        self.stage = stage
        self.headers = headers or {}


class Unauthorized(ServiceError):
    status_code = 401
    error_type = "unauthorized"


class Forbidden(ServiceError):
    """Authenticated, but this key may not do this (``/v1/usage`` wants an admin key)."""

    status_code = 403
    error_type = "forbidden"


class InvalidRequest(ServiceError):
    status_code = 422
    error_type = "invalid_request"


class ModelNotFound(ServiceError):
    """``/v1``: the request names a model this service does not serve."""

    status_code = 404
    error_type = "model_not_found"


class PayloadTooLarge(ServiceError):
    status_code = 413
    error_type = "payload_too_large"


class Overloaded(ServiceError):
    status_code = 429
    error_type = "overloaded"


class LimitExceeded(ServiceError):
    """A key is over one of its limits (``Retry-After``: the end of that window).

    ``error_type`` names the limit: ``rate_limit_exceeded`` (requests per
    minute), ``token_limit_exceeded`` (tokens per minute), ``budget_exceeded``
    (USD per day)."""

    status_code = 429
    error_type = "rate_limit_exceeded"

    def __init__(self, message: str, *, error_type: str, retry_after_s: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})
        self.error_type = error_type


class LimitsUnavailable(ServiceError):
    """The limits store cannot be reached and DIVCONQ_LIMITS__ON_STORE_ERROR is 'deny'."""

    status_code = 503
    error_type = "limits_unavailable"


class ClientDisconnected(ServiceError):
    """The client closed the connection before its answer: nginx's 499 "client
    closed request". Recorded (metrics, access log), never logged as a failure;
    the response itself reaches nobody."""

    status_code = 499
    error_type = "client_closed_request"


class NotReady(ServiceError):
    """The decomposer is still loading (or failed to load)."""

    status_code = 503
    error_type = "not_ready"


class UpstreamError(ServiceError):
    """A model backend was unreachable, failed, or answered nonsense."""

    status_code = 502
    error_type = "upstream_error"
    # The ``divconq_solver_calls_total{outcome}`` label of this failure.
    outcome = "upstream_error"

    def __init__(self, detail: str, *, role: str = "model") -> None:
        # ``detail`` reads after the role: "at http://host:8000 timed out (ReadTimeout)".
        super().__init__(f"{role} {detail}")
        self.detail = detail
        self.role = role

    def during(self, stage: str, role: str | None = None) -> UpstreamError:
        """Attach where the call was made (once, by the caller); returns ``self``."""
        if role is not None:
            self.role = role
        self.stage = stage
        self.message = f"{self.role} {self.detail} during '{stage}'"
        self.args = (self.message,)
        return self


class UpstreamConnectError(UpstreamError):
    outcome = "connect_error"


# Statuses by which a backend says the input itself is wrong (too long, a bad
# value): the same request fails the same way on every retry, so it is never
# retried, and the client gets 422, never a 5xx. 401, 403 and 404 are the
# service's configuration (its key, its model name), not the client's: 502.
INPUT_REFUSED_STATUS = frozenset({400, 413, 422})


class UpstreamStatusError(UpstreamError):
    outcome = "http_error"

    @property
    def refuses_input(self) -> bool:
        """The backend refused the request's input (``INPUT_REFUSED_STATUS``)."""
        return self.status in INPUT_REFUSED_STATUS

    def __init__(self, detail: str, *, status: int, retry_after_s: float | None = None) -> None:
        super().__init__(detail)
        self.status = status
        # Reported inside a streamed reply (after its headers), not as its status.
        self.mid_stream = False
        # What the server asked us to wait before trying again, in seconds.
        self.retry_after_s = retry_after_s


class UpstreamInvalidResponse(UpstreamError):
    outcome = "invalid_response"


class UpstreamTimeout(UpstreamError):
    status_code = 504
    error_type = "upstream_timeout"
    outcome = "timeout"


class DeadlineExceeded(UpstreamTimeout):
    """The request's own deadline passed (not one call's timeout)."""

    outcome = "deadline"

    def __init__(self, seconds: float) -> None:
        super().__init__(f"request deadline of {seconds:g} s exceeded")
        # Not a model's failure: the message is the whole story.
        self.message = self.detail
