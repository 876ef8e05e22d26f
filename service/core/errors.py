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

from typing import Any


class ServiceError(Exception):
    """An error a client may see: its HTTP status and stable ``type`` are the class's.

    A subclass names them once, in its header:
    ``class Unauthorized(ServiceError, status=401, error_type="unauthorized")``.
    """

    status_code = 500
    error_type = "internal_error"

    def __init_subclass__(
        cls, *, status: int | None = None, error_type: str | None = None, **kwargs: Any
    ) -> None:
        super().__init_subclass__(**kwargs)
        if status is not None:
            cls.status_code = status
        if error_type is not None:
            cls.error_type = error_type

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


class Unauthorized(ServiceError, status=401, error_type="unauthorized"):
    """No API key, or one the service does not know."""


class Forbidden(ServiceError, status=403, error_type="forbidden"):
    """Authenticated, but this key may not do this (``/v1/usage`` wants an admin key)."""


class InvalidRequest(ServiceError, status=422, error_type="invalid_request"):
    """The request's input is wrong (a field, a limit, a prompt the model refuses)."""


class ModelNotFound(ServiceError, status=404, error_type="model_not_found"):
    """``/v1``: the request names a model this service does not serve."""


class PayloadTooLarge(ServiceError, status=413, error_type="payload_too_large"):
    """The request body is larger than the service takes (``BodyLimitMiddleware``)."""


class Overloaded(ServiceError, status=429, error_type="overloaded"):
    """As many requests in flight as this process takes: try again shortly."""


class LimitExceeded(ServiceError, status=429, error_type="rate_limit_exceeded"):
    """A key is over one of its limits (``Retry-After``: the end of that window).

    ``error_type`` names the limit: ``rate_limit_exceeded`` (requests per
    minute), ``token_limit_exceeded`` (tokens per minute), ``budget_exceeded``
    (USD per day)."""

    def __init__(self, message: str, *, error_type: str, retry_after_s: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})
        self.error_type = error_type


class LimitsUnavailable(ServiceError, status=503, error_type="limits_unavailable"):
    """The limits store cannot be reached and DIVCONQ_LIMITS__ON_STORE_ERROR is 'deny'."""


class ClientDisconnected(ServiceError, status=499, error_type="client_closed_request"):
    """The client closed the connection before its answer: nginx's 499 "client
    closed request". Recorded (metrics, access log), never logged as a failure;
    the response itself reaches nobody."""


class NotReady(ServiceError, status=503, error_type="not_ready"):
    """The decomposer is still loading (or failed to load)."""


class UpstreamError(ServiceError, status=502, error_type="upstream_error"):
    """A model backend was unreachable, failed, or answered nonsense."""

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


class UpstreamTimeout(UpstreamError, status=504, error_type="upstream_timeout"):
    outcome = "timeout"


class DeadlineExceeded(UpstreamTimeout):
    """The request's own deadline passed (not one call's timeout)."""

    outcome = "deadline"

    def __init__(self, seconds: float) -> None:
        super().__init__(f"request deadline of {seconds:g} s exceeded")
        # Not a model's failure: the message is the whole story.
        self.message = self.detail
