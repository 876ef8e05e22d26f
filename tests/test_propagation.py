"""What a model call carries out (``service.observability.propagation``): exactly what
the configured OTel propagator would write, by the direct path or through it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import baggage, context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from service.observability import propagation, spans
from service.observability.spans import LightSpan, LightTracer, Provider

_KEYS = st.from_regex(r"[a-z][a-z0-9_\-*/]{0,15}", fullmatch=True)
_VALUES = st.from_regex(r"[!-+\--<>-~]{1,16}", fullmatch=True)  # no ',' or '='


# Any trace a caller may send: ids, sampled or not, up to four tracestate entries.
_any_trace = given(
    trace_id=st.integers(1, 2**128 - 1),
    span_id=st.integers(1, 2**64 - 1),
    sampled=st.booleans(),
    state=st.lists(st.tuples(_KEYS, _VALUES), max_size=4, unique_by=lambda kv: kv[0]),
)


def _context(trace_id: int, span_id: int, sampled: bool, state: list[tuple[str, str]]) -> Any:
    ctx = SpanContext(
        trace_id,
        span_id,
        False,
        TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT),
        TraceState(state),
    )
    return NonRecordingSpan(ctx)


def _theirs(span: Any) -> dict[str, str]:
    headers: dict[str, str] = {}
    propagate.inject(headers, trace.set_span_in_context(span))
    return headers


def _ours(span: Any) -> dict[str, str]:
    headers: dict[str, str] = {"authorization": "Bearer k"}
    propagation.inject(headers, span)
    assert headers.pop("authorization") == "Bearer k"  # what was there stays
    return headers


@_any_trace
def test_our_spans_headers_are_the_default_propagators(
    trace_id: int, span_id: int, sampled: bool, state: list[tuple[str, str]]
) -> None:
    """A request's spans of ours write headers from parts formatted once per trace:
    the same headers as ``propagate.inject`` writes from their contexts."""
    tracer = LightTracer.of(Provider(), InstrumentationScope("divconq", "test"))
    caller = trace.set_span_in_context(_context(trace_id, span_id, sampled, state))
    caller_ctx = trace.get_current_span(caller).get_span_context()
    remote = SpanContext(trace_id, span_id, True, caller_ctx.trace_flags, caller_ctx.trace_state)
    root = tracer.start(
        "POST", SpanKind.SERVER, context=trace.set_span_in_context(NonRecordingSpan(remote))
    )
    token = spans.enter(root)
    try:
        child = tracer.start("chat m", SpanKind.CLIENT)
    finally:
        spans.leave(token)
    for span in (root, child):
        if sampled:
            assert isinstance(span, LightSpan)
        assert _ours(span) == _theirs(span)
        assert propagation.traceparent_of(span) == _theirs(span)["traceparent"]
        assert span.get_span_context().trace_id == trace_id


@pytest.fixture
def textmap() -> Iterator[None]:
    """Whatever a test sets as the global propagator is undone after it."""
    before = propagate.get_global_textmap()
    yield
    propagate.set_global_textmap(before)


@_any_trace
def test_the_default_propagators_headers_exactly(
    trace_id: int, span_id: int, sampled: bool, state: list[tuple[str, str]]
) -> None:
    span = _context(trace_id, span_id, sampled, state)
    assert _ours(span) == _theirs(span)
    assert _ours(span)["traceparent"] == (
        f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"
    )


def test_baggage_in_the_context_goes_out_too() -> None:
    span = _context(7, 9, True, [])
    token = context.attach(baggage.set_baggage("tenant", "blue"))
    try:
        sent = _ours(span)
        assert sent == _theirs(span)
    finally:
        context.detach(token)
    assert sent["baggage"] == "tenant=blue"
    assert sent["traceparent"] == f"00-{7:032x}-{9:016x}-01"


class _B3Single(TextMapPropagator):
    """A propagator that is not W3C trace context (B3's single header)."""

    def extract(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        getter: Getter[Any] = default_getter,
    ) -> Context:
        return context or Context()

    def inject(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        setter: Setter[Any] = default_setter,
    ) -> None:
        ctx = trace.get_current_span(context).get_span_context()
        flags = "1" if ctx.trace_flags.sampled else "0"
        setter.set(carrier, "b3", f"{ctx.trace_id:032x}-{ctx.span_id:016x}-{flags}")

    @property
    def fields(self) -> set[str]:
        return {"b3"}


@pytest.mark.usefixtures("textmap")
@pytest.mark.parametrize(
    "configured",
    [
        _B3Single(),
        CompositePropagator([TraceContextTextMapPropagator(), _B3Single()]),
    ],
    ids=["b3", "w3c+b3"],
)
def test_any_other_propagator_writes_its_own_headers(configured: TextMapPropagator) -> None:
    span = _context(0xABC, 0xDEF, True, [("k", "v")])
    propagate.set_global_textmap(configured)
    sent = _ours(span)
    assert sent == _theirs(span)
    assert sent["b3"] == f"{0xABC:032x}-{0xDEF:016x}-1"
    # Back to plain W3C: the check is made again for the new propagator.
    propagate.set_global_textmap(TraceContextTextMapPropagator())
    assert _ours(span) == {"traceparent": f"00-{0xABC:032x}-{0xDEF:016x}-01", "tracestate": "k=v"}
