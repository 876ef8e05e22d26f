"""Pure-ASGI middleware: request ids, metrics and access logs, admission, the body limit.

Pure ASGI (not BaseHTTPMiddleware) keeps per-request overhead low and lets
the body limit answer 413 before the app parses anything.
"""

from __future__ import annotations

import logging
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import service_error_response
from service.api.request_record import SCOPE_KEY, RequestRecord, StatusLine, record
from service.core.errors import Overloaded, PayloadTooLarge
from service.observability.logs import request_id_var
from service.observability.metrics import Metrics, observe

access_log = logging.getLogger("divconq.access")
# The endpoints that get metrics and access lines (the label values).
_ENDPOINTS = {"/solve": "solve", "/decompose": "decompose"}
# Paths that are an API endpoint only for some bodies: /v1/chat/completions is
# the pipeline facade for a pipeline model (label ``chat_completions``), and
# the raw embedded model otherwise (an operator's probe; the embedded solver
# calls the engine in process, not through here). The
# handler says which: it sets the record's ``endpoint`` and calls its ``admit()``.
_DECIDED_BY_HANDLER = frozenset({"/v1/chat/completions"})

REQUEST_ID_HEADER = "x-request-id"
_MAX_ID_LEN = 128


def _endpoint(scope: Scope) -> str | None:
    """The metric label of an API endpoint; None for probes, docs and /v1."""
    return _ENDPOINTS.get(scope.get("path", "")) if scope["type"] == "http" else None


def _decided_by_handler(scope: Scope) -> bool:
    return scope["type"] == "http" and scope.get("path", "") in _DECIDED_BY_HANDLER


def endpoint_of(scope: Scope) -> str | None:
    """An API request's endpoint label; "" where its handler decides (the facade's
    path: the record's ``endpoint``); None for the rest (probes, docs, metrics)."""
    if _decided_by_handler(scope):
        return ""
    return _endpoint(scope)


def _clean_id(raw: str) -> str | None:
    # Echoed in headers and logs, so only printable ASCII of sane length.
    if 0 < len(raw) <= _MAX_ID_LEN and raw.isascii() and raw.isprintable():
        return raw
    return None


class RequestIdMiddleware:
    """Takes ``X-Request-ID`` from the request or makes one; echoes it back.

    The outermost middleware: it creates the request's ``RequestRecord``
    (``service/api/request_record.py``), which everything inside reads and writes.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                given = _clean_id(value.decode("latin-1"))
                break
        request_id = given or uuid.uuid4().hex
        scope[SCOPE_KEY] = RequestRecord(request_id=request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        token = request_id_var.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


class BodyLimitMiddleware:
    """Rejects request bodies over ``max_bytes`` with 413, declared or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        exc = PayloadTooLarge(f"request body exceeds {self.max_bytes} bytes")
        await service_error_response(exc)(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._reject(scope, receive, send)
                return
        # Read the (bounded) body up front, then replay it to the app.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                # Gone before its body arrived: recorded as 499, nothing answered.
                record(scope).status = 499
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._reject(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class AdmissionMiddleware:
    """The in-flight bound: past ``max_in_flight`` concurrent ``/solve``,
    ``/decompose`` and pipeline-facade requests the answer is 429 at once
    (``Retry-After: 1``). A bounded service, never an unbounded queue. It keeps
    the in-flight count (``metrics.active`` and its gauge) that ``/readyz`` and
    the HPA read. A slot is held until the response (a stream included) ends.

    ``/v1/chat/completions`` is admitted only once its handler knows it runs
    the pipeline: it calls the request record's ``admit()`` (raises ``Overloaded``).
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, max_in_flight: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_in_flight = max_in_flight

    def _overloaded(self) -> Overloaded | None:
        if self.metrics.active < self.max_in_flight:
            return None
        return Overloaded(
            f"{self.max_in_flight} requests already in flight; retry shortly",
            headers={"Retry-After": "1"},
        )

    def _enter(self) -> None:
        self.metrics.active += 1
        self.metrics.in_flight.inc()

    def _leave(self) -> None:
        self.metrics.active -= 1
        self.metrics.in_flight.dec()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if _decided_by_handler(scope):
            await self._on_demand(scope, receive, send)
            return
        if _endpoint(scope) is None:
            await self.app(scope, receive, send)
            return
        if (exc := self._overloaded()) is not None:
            await service_error_response(exc)(scope, receive, send)
            return
        self._enter()
        try:
            await self.app(scope, receive, send)
        finally:
            self._leave()

    async def _on_demand(self, scope: Scope, receive: Receive, send: Send) -> None:
        admitted = False

        def admit() -> None:
            nonlocal admitted
            if admitted:
                return
            if (exc := self._overloaded()) is not None:
                raise exc
            self._enter()
            admitted = True

        record(scope).admit = admit
        try:
            await self.app(scope, receive, send)
        finally:
            if admitted:
                self._leave()


class ObservabilityMiddleware:
    """Records each API request: its metrics and one JSON access log line.

    Handlers put bounded facts in the request's ``RequestRecord``: ``mode``
    (the metric label), ``log_fields`` (stage timings for the log line),
    ``endpoint`` (the label, where the path alone does not say: the facade) and
    ``status`` (what the request came to, where the status line cannot say: a
    stream that failed or lost its client after it began, a client gone before
    its body).
    It decides nothing: 413s and 429s from the middleware inside it are
    recorded like any other answer; a client that left is a 499.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = _endpoint(scope)
        if endpoint is None and not _decided_by_handler(scope):
            await self.app(scope, receive, send)
            return
        line = StatusLine(send)
        started = time.perf_counter()
        try:
            await self.app(scope, receive, line.send)
        finally:
            seconds = time.perf_counter() - started
            rec = record(scope)
            endpoint = endpoint or rec.endpoint
            if endpoint is not None:
                self._record(scope, rec, endpoint, line.final(rec), seconds)

    def _record(
        self, scope: Scope, rec: RequestRecord, endpoint: str, status: int, seconds: float
    ) -> None:
        mode = str(rec.mode or "none")
        # The key's name, never its secret; none without keys configured.
        key = rec.api_key.name if rec.api_key is not None else None
        self.metrics.requests.labels(endpoint, mode, str(status)).inc()
        if key is not None:
            self.metrics.key_requests.labels(key, endpoint, str(status)).inc()
        observe(self.metrics.request_duration.labels(endpoint, mode), seconds)
        access_log.info(
            "request",
            extra={
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "mode": mode,
                "latency_ms": round(seconds * 1000.0, 2),
                **({"key": key} if key is not None else {}),
                **rec.log_fields,
            },
        )
