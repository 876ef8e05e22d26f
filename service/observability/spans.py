"""Our spans: recorded in plain fields, handed to the SDK's processors as ``ReadableSpan``.

Why not the SDK's own ``Tracer``: a ``static`` request makes eight spans, and
the SDK's span costs more than the work it times (a lock, a bounded attribute
map validating every value, a bounded event list, a sampler call, a
``ReadableSpan`` copy at the end). Here a span is a slotted object and a dict
while it runs. Everything else waits until the request has answered: a few
milliseconds after the request's root span (the server span) ends
(``HAND_ON_AFTER_S``, ``LightTracer.hand_on``), every span ended since is
checked, becomes the SDK's public ``ReadableSpan`` and goes to the provider's
span processors (``on_end``), so the batch processor, the OTLP exporters and
the in-memory test exporter see exactly what the SDK would give them, and
neither the request's client nor the next request waits for that work.
(Processors therefore get a request's spans together, after its end, rather
than one by one; ``Provider.force_flush`` hands on what is waiting.)

What still holds, as the SDK does it:

- **Sampling**: the provider's sampler (``OTEL_TRACES_SAMPLER``) decides once
  per trace in this process, at the request's root span, with the caller's
  context; the spans under it follow that decision (what the default
  ``parentbased_*`` samplers give). An unsampled request makes one
  non-recording span (``QuietSpan``), which still carries ``traceparent``
  to the solvers, written as directly as a sampled request's.
  The SDK's default sampler itself (``ParentBased(ALWAYS_ON)``) is not
  called: its answer is the caller's sampled flag, or yes without a caller.
- **Limits**: ``OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT``, ``OTEL_ATTRIBUTE_COUNT_LIMIT``
  and the value-length limits apply when a span is handed on, through the
  SDK's ``BoundedAttributes`` (nothing to do under the defaults); events (an
  unexpected exception's) are bounded the same way.
- **Values**: an attribute that is not a string, bool, int, float or a
  sequence of them is dropped with a warning; sequences become tuples.

A span is used on the event loop that made it (a request's tasks share it),
so it takes no lock; the queue of ended spans is a thread-safe deque.

**The current span** is kept in this module's own context variable
(``current``, ``enter``, ``leave``) rather than in the OTel context: making a
span current there copies the context's dict, and every lookup walks three
calls deep, for each of a request's spans and for each use (the parent of the
next span, ``traceparent``, exemplars, log lines). The OTel context still
carries the request's server span (``TraceMiddleware`` attaches it), so code
that asks the OTel API finds the request's trace; and where this variable
holds nothing (code outside a request, a test), ``current`` asks the OTel
context.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import random
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import (
    Event,
    ReadableSpan,
    SpanLimits,
    SpanProcessor,
    SynchronousMultiSpanProcessor,
    TracerProvider,
)
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision, ParentBased, Sampler
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    INVALID_SPAN,
    INVALID_SPAN_CONTEXT,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)
from opentelemetry.util.types import Attributes, AttributeValue

from service.observability import span_errors

log = logging.getLogger(__name__)

_SCALARS = (str, bool, int, float)
_SCALAR_TYPES = frozenset(_SCALARS)  # exact classes: the check without a call per value
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_UNSET = Status(StatusCode.UNSET)
_NO_STATE = TraceState()  # immutable: one for every trace that brings none
# ``on_start`` methods known to do nothing.
_NO_OP_STARTS = frozenset(
    {SpanProcessor.on_start, BatchSpanProcessor.on_start, SimpleSpanProcessor.on_start}
)
# Ended spans a tracer holds at most before handing them on without their root.
_MAX_WAITING = 1024
# How long after a request answers its spans are handed on (``LightTracer.hand_on``).
HAND_ON_AFTER_S = 0.005
# What the SDK's default ``RandomIdGenerator`` calls, called directly.
_random_bits = random.getrandbits
# ``traceparent``'s last field for the usual flags, written once.
_TAILS = {0: "-00", 1: "-01"}
# Ids made ahead per tracer (``_Ids``): a second of requests at a few hundred a
# second, eight spans each, before the next hand-on tops them up.
_SPAN_IDS_AHEAD = 512
_TRACE_IDS_AHEAD = 64
# The SDK's default sampler (``parentbased_always_on``), as it describes itself.
_DEFAULT_SAMPLER = ParentBased(ALWAYS_ON).get_description()  # type: ignore[no-untyped-call]


_current: contextvars.ContextVar[Span] = contextvars.ContextVar(
    "divconq_span", default=INVALID_SPAN
)


def current() -> Span:
    """The current span: the innermost one ``enter`` ed in this task, else the OTel
    context's (``INVALID_SPAN`` outside any trace)."""
    span = _current.get()
    return span if span is not INVALID_SPAN else trace.get_current_span()


# ``own()``: the innermost span ``enter`` ed in this task, ``INVALID_SPAN`` when none
# (the OTel context not asked): the context variable's own method, no Python frame
# between. For code on every model call that acts only on a span of ours, and asks
# ``current()`` otherwise.
own: Callable[[], Span] = _current.get


def hex_ids(ctx: SpanContext) -> dict[str, str]:
    """``trace_id`` and ``span_id`` as W3C writes them (lower-case hex), for log lines,
    error bodies and exemplars."""
    return {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}


def carries_trace(span: Span) -> bool:
    """Whether ``span`` belongs to a trace (sampled or not): what a model call sends on."""
    cls = span.__class__
    return cls is LightSpan or cls is QuietSpan or span.get_span_context().is_valid


# ``enter(span)`` makes ``span`` the current one until ``leave(token)``: the context
# variable's own methods (no Python frame between: a request enters and leaves
# once per span).
enter: Callable[[Span], contextvars.Token[Span]] = _current.set
leave: Callable[[contextvars.Token[Span]], None] = _current.reset


def _clean(key: str, value: object) -> AttributeValue | None:
    """The value as an attribute may hold it; None (dropped, logged) when it may not."""
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, _SCALARS) for v in value):
        return tuple(value)
    log.warning("span attribute %s dropped: invalid type %s", key, type(value).__name__)
    return None


class SpanStarter(Protocol):
    """What request code starts spans with: ours (``LightTracer``) or the SDK's."""

    def start(
        self,
        name: str,
        kind: SpanKind,
        attributes: Mapping[str, AttributeValue] | None = None,
        context: Context | None = None,
    ) -> Span: ...


class Provider(TracerProvider):
    """The SDK's tracer provider with its span processors in public view (``processor``),
    where ``LightTracer`` hands its finished spans. ``force_flush`` and ``shutdown``
    reach the same processors. ``starts`` holds the processors that do something
    when a span starts (the SDK's batch and simple processors do not): a span's
    start calls only those."""

    def __init__(
        self,
        *processors: SpanProcessor,
        resource: Resource | None = None,
        id_generator: IdGenerator | None = None,
        sampler: Sampler | None = None,
    ) -> None:
        self.processor = SynchronousMultiSpanProcessor()  # type: ignore[no-untyped-call]
        self.starts: tuple[SpanProcessor, ...] = ()
        # Our tracers on this provider, whose ended spans ``force_flush`` hands on first.
        self.tracers: weakref.WeakSet[LightTracer] = weakref.WeakSet()
        super().__init__(
            sampler=sampler,
            resource=resource,
            active_span_processor=self.processor,
            id_generator=id_generator,
        )
        for processor in processors:
            self.add_span_processor(processor)

    def add_span_processor(self, span_processor: SpanProcessor) -> None:
        super().add_span_processor(span_processor)
        if type(span_processor).on_start not in _NO_OP_STARTS:
            self.starts = (*self.starts, span_processor)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """What the SDK's does, after our tracers have handed on what they hold
        (requests answered in the last ``HAND_ON_AFTER_S``)."""
        self._hand_on()
        return super().force_flush(timeout_millis)

    def shutdown(self) -> None:
        """The same before the SDK's shutdown (which its ``atexit`` hook also calls,
        for a process that exits without shutting its app down)."""
        self._hand_on()
        super().shutdown()

    def _hand_on(self) -> None:
        for tracer in list(self.tracers):
            tracer.drain()


class SdkTracer:
    """The SDK's own tracer behind ``SpanStarter``: for a provider that is not a
    ``Provider`` (its processors out of reach), at the SDK's cost per span."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    def start(
        self,
        name: str,
        kind: SpanKind,
        attributes: Mapping[str, AttributeValue] | None = None,
        context: Context | None = None,
    ) -> Span:
        if context is None:
            context = trace.set_span_in_context(current())
        return self._tracer.start_span(
            name,
            context=context,
            kind=kind,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        )


class _Ids:
    """Random ids of one width, each with its lower-case hex, made ahead of the
    requests that take them (``LightTracer``, for the SDK's default random ids).

    Why ahead: drawing an id (``random.getrandbits``) and formatting it as hex
    run C code that nothing else on a request's path runs. At each model call,
    after a wait in which other processes ran, that code and its data are out
    of the caches: measured with the caches flushed (an ad-hoc script, AMD
    EPYC), drawing took about 5 µs and formatting about 7 µs, against 0.3 and
    0.6 µs hot, and a ``static`` request draws eight and formats nine. Made
    in a batch when the tracer hands spans on (after requests have answered),
    one id is one ``popleft``. An empty pool (a burst past it) makes its id
    there and then, as before.

    A forked child empties its pools (``os.register_at_fork``): ids made
    before the fork would repeat in both processes, where ``random`` itself
    is reseeded.
    """

    __slots__ = ("__weakref__", "_bits", "_format", "_size", "ready")

    def __init__(self, bits: int, size: int) -> None:
        self._bits = bits
        self._format = f"0{bits // 4}x"
        self._size = size
        self.ready: deque[tuple[int, str]] = deque()
        _IDS.add(self)
        self.fill()

    def make(self) -> tuple[int, str]:
        """A new id (never the invalid 0, as the SDK's generator) and its hex."""
        value = 0
        while not value:
            value = _random_bits(self._bits)
        return value, format(value, self._format)

    def fill(self) -> None:
        """Top the pool up (off the request's path: ``LightTracer.drain``)."""
        ready, make = self.ready, self.make
        for _ in range(self._size - len(ready)):
            ready.append(make())


# Every pool, emptied in a forked child.
_IDS: weakref.WeakSet[_Ids] = weakref.WeakSet()


def _forked() -> None:
    for ids in list(_IDS):
        ids.ready.clear()


os.register_at_fork(after_in_child=_forked)


def _at_once(work: tuple[Callable[..., object], tuple[Any, ...]]) -> None:
    fn, args = work
    fn(*args)


class Trace:
    """What the spans of one request share: the trace's id, flags and state, and the
    parts of the ``traceparent`` / ``tracestate`` headers its model calls carry
    (made once per request, not once per call)."""

    __slots__ = (
        "flags",
        "head",
        "hex_id",
        "plain",
        "put_off",
        "sampled",
        "state",
        "tail",
        "trace_id",
        "tracestate",
    )

    def __init__(
        self,
        trace_id: int,
        flags: TraceFlags,
        state: TraceState,
        hex_id: str | None = None,
        sampled: bool | None = None,
        put_off: Callable[[tuple[Callable[..., object], tuple[Any, ...]]], None] | None = None,
    ) -> None:
        self.trace_id = trace_id
        self.hex_id = format(trace_id, "032x") if hex_id is None else hex_id
        self.flags = flags
        self.sampled = flags.sampled if sampled is None else sampled
        self.state = state
        # Whether the request's model calls may write these headers directly (the
        # configured propagator writes W3C trace context only, and the request
        # carries no baggage): decided at the request's first model call.
        self.plain: bool | None = None
        # traceparent = head + span id (hex) + tail (W3C version 00).
        self.head = "00-" + self.hex_id + "-"
        self.tail = _TAILS.get(flags) or f"-{flags:02x}"
        self.tracestate = "" if state is _NO_STATE or not state else state.to_header()
        # ``put_off((fn, args))``: ``fn(*args)`` once the request has answered (its
        # tracer's queue's own ``append``: ``LightSpan.later`` with no frame between,
        # for the exemplar every model call writes); at once without a tracer.
        self.put_off = _at_once if put_off is None else put_off

    def traceparent(self, hex_id: str) -> str:
        """The W3C ``traceparent`` value of this trace's span whose id is ``hex_id``."""
        return self.head + hex_id + self.tail


class LightSpan(Span):
    """One recording span of ours (see the module's docstring).

    Its ``SpanContext`` is made when first asked for (most spans never are
    until they are handed on): starting a span takes an id and a clock
    reading, and the request's ``Trace`` holds the rest. ``trace`` and
    ``span_id`` (and its hex, ``hex_id``) are plain attributes (read, never
    written, outside this module): a model call's ``traceparent`` and
    exemplar read them without a call.
    """

    __slots__ = (
        "_attributes",
        "_call",
        "_context",
        "_end_time",
        "_events",
        "_kind",
        "_name",
        "_parent",
        "_parent_span",
        "_root",
        "_start_time",
        "_status",
        "_token",
        "_tracer",
        "hex_id",
        "late",
        "span_id",
        "trace",
    )
    # Set only on a child span (``LightTracer.child``), which alone is entered.
    _call: bool  # its failure is recorded as a model call's
    _token: contextvars.Token[Span]

    def __init__(
        self,
        tracer: LightTracer,
        name: str,
        trace_: Trace,
        span_id: int,
        hex_id: str,
        parent_span: LightSpan | None,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, Any],
    ) -> None:
        self._tracer = tracer
        self._name = name
        self.trace = trace_
        self.span_id = span_id
        self.hex_id = hex_id
        self._context: SpanContext | None = None
        # A child's parent is its request's span (its context made when handed on);
        # a root's is the caller's context, or None.
        self._parent_span = parent_span
        self._parent = parent
        self._root = parent_span is None
        self._kind = kind
        self._attributes = attributes
        # Attributes worked out when the span is handed on, after its request has
        # answered: ``(fn, arg)`` adds ``fn(arg)`` (a model call's server from its
        # URL, its tokens from its completion). Appended to directly: a model call
        # adds two, and a method would be one more frame each time.
        self.late: list[tuple[Callable[[Any], Mapping[str, Any]], Any]] = []
        self._events: list[Event] | None = None  # made on the first event
        self._status = _UNSET
        self._start_time = time.time_ns()
        self._end_time: int | None = None

    # -- the API ----------------------------------------------------------------------

    def get_span_context(self) -> SpanContext:
        context = self._context
        if context is None:
            trace_ = self.trace
            context = self._context = SpanContext(
                trace_.trace_id, self.span_id, False, trace_.flags, trace_.state
            )
        return context

    def traceparent(self) -> str:
        """This span's W3C ``traceparent`` header value."""
        trace_ = self.trace
        return trace_.head + self.hex_id + trace_.tail

    def is_recording(self) -> bool:
        return self._end_time is None

    # Values are checked once, after the request (``readable``).
    def set_attribute(self, key: str, value: Any) -> None:
        if self._end_time is None:
            self._attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        if self._end_time is None:
            self._attributes.update(attributes)

    def later(self, fn: Callable[..., object], *args: Any) -> None:
        """Call ``fn(*args)`` once this span's request has answered (its tracer's
        ``drain``): trace work the request's client need not wait for."""
        self._tracer._later.append((fn, args))

    def child(self, name: str, kind: SpanKind, attributes: dict[str, Any], call: bool) -> LightSpan:
        """A child of this span, in its trace and its tracer's, to be used as a context
        manager (current for the code inside; a failure inside marks it, ``call``:
        as a model call's). ``attributes`` becomes the child's own (not copied).

        What every model call and pipeline step starts: the parent already took
        the sampling decision, so it is one frame and a constructor.
        """
        tracer = self._tracer
        try:
            span_id, hex_id = tracer._span_ids.ready.popleft()
        except IndexError:
            span_id, hex_id = tracer._new_span_id()
        span = LightSpan(tracer, name, self.trace, span_id, hex_id, self, None, kind, attributes)
        span._call = call
        provider = tracer._provider
        if provider is None or provider.starts:
            tracer._started(span)
        return span

    def update_name(self, name: str) -> None:
        if self._end_time is None:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        # As the SDK: OK is final, UNSET changes nothing.
        if self._end_time is not None or self._status.status_code is StatusCode.OK:
            return
        if isinstance(status, StatusCode):
            status = Status(status, description)
        if status.status_code is not StatusCode.UNSET:
            self._status = status

    def add_event(
        self, name: str, attributes: Attributes = None, timestamp: int | None = None
    ) -> None:
        limits = self._tracer.limits
        events = self._events
        if events is None:
            events = self._events = []
        if self._end_time is not None or len(events) >= (limits.max_events or 0):
            return
        bounded = BoundedAttributes(
            limits.max_event_attributes,
            attributes,
            immutable=True,
            max_value_len=limits.max_attribute_length,
        )
        events.append(Event(name, bounded, timestamp or time.time_ns()))

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        import traceback  # only on an unexpected failure

        kind = type(exception)
        module = kind.__module__
        event: dict[str, AttributeValue] = {
            "exception.type": kind.__qualname__
            if module in ("builtins", "")
            else f"{module}.{kind.__qualname__}",
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        event.update(attributes or {})
        self.add_event("exception", event, timestamp)

    # -- as a child span, current for the code inside (``LightTracer.child``) ----------

    def __enter__(self) -> LightSpan:
        self._token = _current.set(self)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        try:
            if exc is not None:
                span_errors.record_error(self, exc, self._call)
        finally:
            _current.reset(self._token)
            # (``end``, written out for a child span: it ends every model call)
            if self._end_time is None:
                self._end_time = time.time_ns()
                ended = self._tracer._ended
                ended.append(self)
                if len(ended) > _MAX_WAITING:
                    self._tracer.drain()

    def end(self, end_time: int | None = None) -> None:
        if self._end_time is not None:
            return
        self._end_time = end_time or time.time_ns()
        tracer = self._tracer
        ended = tracer._ended
        ended.append(self)
        # A root's end (its request answered) hands the request's spans on, soon
        # (``LightTracer.hand_on``). A span that ends after its root (a task
        # cancelled late) goes with the next request's, or at shutdown; a queue
        # grown past ``_MAX_WAITING`` (roots that never end) is handed on at once.
        if self._root:
            tracer.hand_on()
        elif len(ended) > _MAX_WAITING:
            tracer.drain()

    # -- what the processors get -----------------------------------------------------

    def readable(self, limits: SpanLimits) -> ReadableSpan:
        if self.late:
            for fn, arg in self.late:
                self._attributes.update(fn(arg))
        checked = _checked(self._attributes)
        attributes: Attributes = checked
        length = limits.max_span_attribute_length
        if length is not None or len(checked) > (limits.max_span_attributes or 0):
            attributes = BoundedAttributes(
                limits.max_span_attributes, checked, immutable=True, max_value_len=length
            )
        tracer = self._tracer
        parent = self._parent_span
        return ReadableSpan(
            name=self._name,
            context=self.get_span_context(),
            parent=self._parent if parent is None else parent.get_span_context(),
            resource=tracer.resource,
            attributes=attributes,
            events=tuple(self._events) if self._events else (),
            kind=self._kind,
            status=self._status,
            start_time=self._start_time,
            end_time=self._end_time,
            instrumentation_scope=tracer.scope,
        )


class QuietSpan(NonRecordingSpan):
    """The span of a request the sampler drops (our tracer's root): it records
    nothing, and, as a ``LightSpan`` does, it keeps what its model calls'
    ``traceparent`` is made of (``trace``, ``span_id``, ``hex_id``), so the request hook
    writes that header as directly as a sampled request's.

    No span is made under it: the span helpers enter ``scope`` (this span,
    current for the code inside), where the SDK would make a non-recording
    child per step. Measured side by side, an unsampled ``static`` request
    cost as much as a sampled one before (docs/observability.md): this is
    the path most requests take under ratio sampling.
    """

    def __init__(self, context: SpanContext, trace_: Trace, hex_id: str) -> None:
        super().__init__(context)
        self.trace = trace_
        self.span_id = context.span_id
        self.hex_id = hex_id
        self.scope: contextlib.AbstractContextManager[Span] = contextlib.nullcontext(self)

    def traceparent(self) -> str:
        """This span's W3C ``traceparent`` header value."""
        return self.trace.traceparent(self.hex_id)


class LightTracer:
    """Starts ``LightSpan`` s for one provider's sampler, ids, resource and processors."""

    def __init__(
        self,
        *,
        processor: SpanProcessor,
        resource: Resource,
        sampler: Sampler,
        ids: IdGenerator,
        scope: InstrumentationScope,
        limits: SpanLimits | None = None,
        provider: Provider | None = None,
        hand_on_after_s: float = HAND_ON_AFTER_S,
    ) -> None:
        self.processor = processor
        # Whose ``starts`` to call when a span starts; without one, ``processor``'s.
        self._provider = provider
        self.resource = resource
        self.sampler = sampler
        # The default sampler's decision needs no call: the caller's flag, else sample.
        # (Named in OTEL_TRACES_SAMPLER it is a subclass that only fixes the root's.)
        self._samples_by_parent = (
            isinstance(sampler, ParentBased)
            and type(sampler).should_sample is ParentBased.should_sample
            and sampler.get_description() == _DEFAULT_SAMPLER  # type: ignore[no-untyped-call]
        )
        self.ids = ids
        # The SDK's default ids are ``random.getrandbits``: made ahead here (``_Ids``);
        # any other generator's are its own, made when a span starts.
        self._random_ids = type(ids) is RandomIdGenerator
        self._span_ids = _Ids(64, _SPAN_IDS_AHEAD if self._random_ids else 0)
        self._trace_ids = _Ids(128, _TRACE_IDS_AHEAD if self._random_ids else 0)
        self.scope = scope
        self.limits = limits or SpanLimits()
        # Ended spans waiting for their request's end (``drain``).
        self._ended: deque[LightSpan] = deque()
        # Work put off until then (``LightSpan.later``).
        self._later: deque[tuple[Callable[..., object], tuple[Any, ...]]] = deque()
        self.hand_on_after_s = hand_on_after_s
        # The pending hand-on (``hand_on``) and the loop it waits on.
        self._hand_on: asyncio.TimerHandle | None = None
        self._hand_on_loop: asyncio.AbstractEventLoop | None = None
        if provider is not None:
            provider.tracers.add(self)

    def start(
        self,
        name: str,
        kind: SpanKind,
        attributes: Mapping[str, AttributeValue] | None = None,
        context: Context | None = None,
    ) -> Span:
        """A child of the span current in ``context`` (default: ``current()``).

        Under a span of ours the decision is already made: a recording parent
        gets a recording child, a non-recording one stays the current span.
        """
        if context is None:
            parent = _current.get()
            if parent is INVALID_SPAN:
                parent = trace.get_current_span()  # (as ``current()``: the OTel context's)
        elif not context:  # (an empty context: no caller, nothing to look up)
            return self._root(name, kind, attributes, context, INVALID_SPAN_CONTEXT)
        else:
            parent = trace.get_current_span(context)
        if parent.__class__ is LightSpan:  # not isinstance: Span is an ABC, slow to check
            return parent.child(name, kind, dict(attributes) if attributes else {}, False)
        parent_ctx = parent.get_span_context()
        if parent_ctx.is_valid and not parent_ctx.is_remote:
            return parent  # a local non-recording span: the request is not sampled
        return self._root(name, kind, attributes, context, parent_ctx)

    def child(
        self, name: str, kind: SpanKind, attributes: dict[str, Any], call: bool
    ) -> contextlib.AbstractContextManager[Span] | None:
        """A child of the current span, to be used as a context manager (current for
        the code inside; a failure inside marks it, ``call``: as a model call's);
        in an unsampled request of ours, its span's ``scope`` (no child); None
        when the current span is not ours (``start`` then decides).

        ``attributes`` becomes the span's own (not copied). A child of ours is
        made by its parent (``LightSpan.child``), in the parent's trace.
        """
        parent = _current.get()
        if parent.__class__ is LightSpan:
            return parent.child(name, kind, attributes, call)
        if parent.__class__ is QuietSpan:
            return parent.scope
        return None

    def _root(
        self,
        name: str,
        kind: SpanKind,
        attributes: Mapping[str, AttributeValue] | None,
        context: Context | None,
        parent_ctx: SpanContext,
    ) -> Span:
        valid = parent_ctx is not INVALID_SPAN_CONTEXT and parent_ctx.is_valid
        trace_hex: str | None = None
        if valid:
            trace_id = parent_ctx.trace_id
        else:
            try:
                trace_id, trace_hex = self._trace_ids.ready.popleft()
            except IndexError:
                trace_id, trace_hex = self._new_trace_id()
        if self._samples_by_parent:
            # What ParentBased(ALWAYS_ON) decides (a caller's span is remote here).
            sampled = not valid or parent_ctx.trace_flags.sampled
            drop = not sampled
            trace_state = (parent_ctx.trace_state or _NO_STATE) if valid else _NO_STATE
            attrs = dict(attributes) if attributes and sampled else {}
        else:
            result = self.sampler.should_sample(context, trace_id, name, kind, attributes)
            sampled = result.decision is Decision.RECORD_AND_SAMPLE
            drop = result.decision is Decision.DROP
            trace_state = result.trace_state or parent_ctx.trace_state or _NO_STATE
            attrs = dict(result.attributes) if result.attributes else {}
        flags = _SAMPLED if sampled else _NOT_SAMPLED
        try:
            span_id, hex_id = self._span_ids.ready.popleft()
        except IndexError:
            span_id, hex_id = self._new_span_id()
        trace_ = Trace(trace_id, flags, trace_state, trace_hex, sampled, self._later.append)
        if drop:
            context_ = SpanContext(trace_id, span_id, False, flags, trace_state)
            return QuietSpan(context_, trace_, hex_id)
        parent = parent_ctx if valid else None
        span = LightSpan(self, name, trace_, span_id, hex_id, None, parent, kind, attrs)
        provider = self._provider
        if provider is None or provider.starts:
            self._started(span)
        return span

    def _new_span_id(self) -> tuple[int, str]:
        """A span id and its hex, made now: the pool is empty, or ids are not ours."""
        if self._random_ids:
            return self._span_ids.make()
        span_id = self.ids.generate_span_id()
        return span_id, format(span_id, "016x")

    def _new_trace_id(self) -> tuple[int, str]:
        """A trace id and its hex, made now (as ``_new_span_id``)."""
        if self._random_ids:
            return self._trace_ids.make()
        trace_id = self.ids.generate_trace_id()
        return trace_id, format(trace_id, "032x")

    def _started(self, span: LightSpan) -> None:
        """Tell the processors that act on a span's start (usually none) about ``span``."""
        provider = self._provider
        if provider is None:
            # (The API span is enough for a processor's on_start: it reads the context.)
            self.processor.on_start(span)  # type: ignore[arg-type]
        elif provider.starts:
            for processor in provider.starts:
                processor.on_start(span)  # type: ignore[arg-type]

    def hand_on(self) -> None:
        """``drain`` in ``hand_on_after_s``, on the running event loop (at once outside
        one, or with no delay): one timer for every request that answers before
        it fires.

        Why not at once: a client that sends its next request as soon as it
        has an answer (one client, back to back) may find the loop still busy
        with this work, and wait for it. A few milliseconds on, the loop is
        usually waiting for a model's answer; the batch processor holds spans
        for seconds anyway. (Under load the work is the same, only batched.)
        Measured at one client it is within the noise (docs/observability.md).
        """
        waiting = self._hand_on_loop
        if self._hand_on is not None and waiting is not None and not waiting.is_closed():
            return  # (a timer on a closed loop never fires: made anew below)
        if self.hand_on_after_s <= 0:
            self.drain()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # (a span ended outside any loop: a test, a thread)
            self.drain()
            return
        self._hand_on_loop = loop
        self._hand_on = loop.call_later(self.hand_on_after_s, self._handed_on)

    def _handed_on(self) -> None:
        self._hand_on = None
        self.drain()

    def drain(self) -> None:
        """Run the work put off (``LightSpan.later``) and hand every ended span to the
        processors (also on shutdown and ``Provider.force_flush``)."""
        timer, self._hand_on = self._hand_on, None
        if timer is not None:  # (drained now: the timer would find nothing)
            with contextlib.suppress(RuntimeError):  # (its loop may be closed)
                timer.cancel()
        later = self._later
        while later:
            try:
                fn, args = later.popleft()
            except IndexError:  # another thread took the last one
                break
            try:
                fn(*args)
            except Exception:  # one failed record must not lose the request's spans
                log.exception("deferred trace work failed")
        ended, limits, processor = self._ended, self.limits, self.processor
        while ended:
            try:
                span = ended.popleft()
            except IndexError:  # another thread took the last one
                break
            processor.on_end(span.readable(limits))
        # The ids the next requests take, made now rather than on their path.
        self._span_ids.fill()
        self._trace_ids.fill()

    @classmethod
    def of(cls, provider: Provider, scope: InstrumentationScope) -> LightTracer:
        return cls(
            processor=provider.processor,
            resource=provider.resource,
            sampler=provider.sampler,
            ids=provider.id_generator,
            scope=scope,
            provider=provider,
        )


def _checked(attributes: dict[str, Any]) -> dict[str, AttributeValue]:
    """The attributes with each value checked: sequences as tuples, invalid values gone.

    The span's own dict when every value is a plain scalar or a tuple of strings
    (the usual case): the span has ended, nothing writes to it any more.
    """
    for value in attributes.values():
        cls = value.__class__
        if cls not in _SCALAR_TYPES and not (
            cls is tuple and all(v.__class__ is str for v in value)
        ):
            break
    else:
        return attributes
    out: dict[str, AttributeValue] = {}
    for key, value in attributes.items():
        if value.__class__ not in _SCALAR_TYPES:
            value = _clean(key, value)
            if value is None:
                continue
        out[key] = value
    return out
