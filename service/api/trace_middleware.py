"""Pure-ASGI middleware: the server span of each request, continuing the caller's trace.

Just inside ``RequestIdMiddleware`` (which creates the request's record), so
the span covers everything else the request meets (admission's 429, the body
limit's 413, a stream to its last event). An
incoming W3C ``traceparent`` / ``tracestate`` (whatever ``OTEL_PROPAGATORS``
names) makes it a child of the caller's span; incoming ``baggage`` goes on
with every solver call. The app's ``Tracing`` is made
current for the request, so the pipeline's spans and the solver calls'
``traceparent`` hang under this span. Probes and ``/metrics`` are not traced.

The response carries ``traceresponse`` (W3C Trace Context level 2): a caller
that sent no ``traceparent`` learns which trace to look up. With tracing off
this middleware only passes the request on.
"""

from __future__ import annotations

from opentelemetry import context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.request_record import record
from service.observability import propagation, semconv, spans, trace_setup, tracing

_UNTRACED = frozenset({"/healthz", "/readyz", "/metrics"})
# What any propagator extracts from a request without its fields: no parent.
_NO_PARENT = Context()


class TraceMiddleware:
    def __init__(self, app: ASGIApp, tracing_: trace_setup.Tracing) -> None:
        self.app = app
        self.tracing = tracing_
        self._fields: tuple[object, frozenset[bytes]] | None = None

    def _wanted(self) -> frozenset[bytes]:
        """The header names to read: the global propagator's fields (it may be
        replaced, as ``OTEL_PROPAGATORS`` or a test does) and ``user-agent``."""
        textmap = propagate.get_global_textmap()
        if self._fields is None or self._fields[0] is not textmap:
            names = {f.lower().encode("latin-1") for f in textmap.fields} | {b"user-agent"}
            self._fields = (textmap, frozenset(names))
        return self._fields[1]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tracer = self.tracing.tracer
        if tracer is None or scope["type"] != "http" or scope["path"] in _UNTRACED:
            await self.app(scope, receive, send)
            return
        # Only the headers the configured propagators read (and the user agent).
        wanted = self._wanted()
        carrier: dict[str, str] = {}
        for k, v in scope["headers"]:  # (a loop: a comprehension is one more frame)
            if k in wanted:
                carrier[k.decode("latin-1")] = v.decode("latin-1")
        method = scope["method"]
        attributes = {
            "http.request.method": method,
            "url.path": scope["path"],
            "url.scheme": scope.get("scheme", "http"),
            "network.protocol.version": scope.get("http_version", "1.1"),
        }
        if scope.get("client"):
            attributes["client.address"] = scope["client"][0]
        agent = carrier.pop("user-agent", None)
        if agent is not None:
            attributes["user_agent.original"] = agent
        rec = record(scope)
        attributes[semconv.REQUEST_ID] = rec.request_id
        status = 500  # what the client gets if the app dies before answering
        # Started and attached by hand: the same span, current for the app, without
        # the SDK's two generator context managers.
        # A propagator reads only its own fields: none sent, nothing to extract.
        parent = propagate.extract(carrier) if carrier else _NO_PARENT
        span = tracer.start(method, SpanKind.SERVER, attributes, parent)
        # Current for our spans (``spans.current``) and, once per request, in the
        # OTel context, for code that asks the OTel API; that context keeps what
        # else the caller's headers brought (W3C baggage), for the solver calls.
        token = context.attach(trace.set_span_in_context(span, parent))
        span_token = spans.enter(span)
        if span.__class__ is spans.LightSpan or span.__class__ is spans.QuietSpan:
            header = span.trace.head + span.hex_id + span.trace.tail  # (without two frames)
        else:
            header = propagation.traceparent_of(span)
        ids = {"trace_id": header[3:35], "span_id": header[36:52]}
        header_bytes = header.encode()
        # The 500 handler runs outside this middleware: it finds the ids here.
        rec.trace_ids = ids

        async def send_traced(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [*message.get("headers", []), (b"traceresponse", header_bytes)]
            await send(message)

        # The app's tracing, current for the request (its spans, its model calls').
        using = tracing.enter(self.tracing)
        try:
            await self.app(scope, receive, send_traced)
        except BaseException as exc:
            tracing.record_error(span, exc)
            raise
        finally:
            tracing.leave(using)
            # A stream that failed after it began records what it came to.
            final = rec.status if rec.status is not None else status
            done: dict[str, str | int] = {"http.response.status_code": final}
            route = getattr(scope.get("route"), "path", None)
            if route:
                span.update_name(f"{method} {route}")
                done["http.route"] = route
            if rec.mode:
                done[semconv.MODE] = rec.mode
            if final >= 500:
                done[semconv.ERROR_TYPE] = str(final)
                span.set_status(Status(StatusCode.ERROR))
            span.set_attributes(done)
            spans.leave(span_token)
            context.detach(token)
            span.end()
