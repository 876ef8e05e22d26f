"""The trace context a model call carries out: W3C ``traceparent`` (and ``tracestate``).

``propagate.inject`` asks the global propagator, which with the default
``OTEL_PROPAGATORS`` (``tracecontext,baggage``) walks the OTel context twice
and formats the header through a regex-checked path: a few microseconds per
call, on every model call of every request. When the configured propagator
writes exactly what W3C Trace Context says (checked once per propagator, by
injecting a probe context and comparing), the header is formatted here
directly; any other propagator (B3, Jaeger, a custom one) or a context that
carries baggage goes through ``propagate.inject`` as before.
"""

from __future__ import annotations

from collections.abc import MutableMapping

from opentelemetry import baggage, propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, TraceFlags, TraceState

from service.observability.spans import LightSpan, QuietSpan, Trace

_PROBE = SpanContext(
    trace_id=0x0AF7651916CD43DD8448EB211C80319C,
    span_id=0xB7AD6B7169203331,
    is_remote=False,
    trace_flags=TraceFlags(TraceFlags.SAMPLED),
    trace_state=TraceState([("divconq", "probe")]),
)
_PROBE_HEADERS = {
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "tracestate": "divconq=probe",
}
# The last propagator checked, and whether it writes plain W3C trace context.
_checked: tuple[TextMapPropagator | None, bool] = (None, False)


def traceparent(ctx: SpanContext) -> str:
    """The W3C ``traceparent`` value of a span context (version 00)."""
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


def traceparent_of(span: Span) -> str:
    """The W3C ``traceparent`` value of a span's context."""
    if span.__class__ is LightSpan or span.__class__ is QuietSpan:
        return span.traceparent()
    return traceparent(span.get_span_context())


def _writes_w3c(textmap: TextMapPropagator) -> bool:
    """Whether ``textmap`` writes exactly W3C trace context for a probe span."""
    carrier: dict[str, str] = {}
    try:
        textmap.inject(carrier, trace.set_span_in_context(NonRecordingSpan(_PROBE), Context()))
    except Exception:  # a propagator that fails here fails in propagate.inject too
        return False
    return carrier == _PROBE_HEADERS


def _plain() -> bool:
    """Whether headers may be written directly: the configured propagator writes
    plain W3C trace context and the current OTel context carries no baggage."""
    global _checked
    textmap = propagate.get_global_textmap()
    checked, fast = _checked
    if checked is not textmap:
        fast = _writes_w3c(textmap)
        _checked = (textmap, fast)
    # A request that carries baggage sends it on: ``propagate.inject`` writes both.
    return fast and not baggage.get_all()


def plain_for(trace_: Trace) -> bool:
    """``_plain()`` for a request's trace, decided once per request (``Trace.plain``),
    at its first model call."""
    plain = trace_.plain
    if plain is None:
        plain = trace_.plain = _plain()
    return plain


def inject(headers: MutableMapping[str, str], span: Span) -> None:
    """Write ``span``'s context into ``headers`` as the configured propagator would."""
    if isinstance(span, (LightSpan, QuietSpan)):  # ours: the request's trace at hand
        trace_ = span.trace
        if plain_for(trace_):  # the request's headers are half made
            headers["traceparent"] = span.traceparent()
            if trace_.tracestate:
                headers["tracestate"] = trace_.tracestate
            return
    elif _plain():
        ctx = span.get_span_context()
        headers["traceparent"] = traceparent(ctx)
        if ctx.trace_state:
            headers["tracestate"] = ctx.trace_state.to_header()
        return
    propagate.inject(headers, trace.set_span_in_context(span))
