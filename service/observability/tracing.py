"""OpenTelemetry tracing: how it is switched on, and the span helpers request code uses.

The SDK is set up in ``trace_setup`` and the attribute names live in ``semconv``;
this module is what the pipeline, the solver chain and the cache call.

Off unless the standard variables turn it on: ``OTEL_TRACES_EXPORTER`` (``otlp``,
``otlp_proto_http``, ``otlp_proto_grpc``, ``console``, any installed exporter's
entry point; ``none`` = off) or an OTLP endpoint (``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``: the exporter is then ``otlp``).
``OTEL_SDK_DISABLED=true`` wins. ``otlp`` speaks gRPC unless
``OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL=http/protobuf`` says HTTP, as the Python
SDK's own auto-configuration does, and as it does ``OTEL_TRACES_SAMPLER(_ARG)``
and ``OTEL_PYTHON_ID_GENERATOR`` name the sampler and the id generator (the
SDK's own, or one an installed package registers: ``trace_setup``).
Everything else is read by the SDK itself: ``OTEL_SERVICE_NAME`` /
``OTEL_RESOURCE_ATTRIBUTES`` (the resource; the service name defaults to
``divconq``), ``OTEL_BSP_*``
(the batch processor), ``OTEL_EXPORTER_OTLP_*`` (endpoint, headers, timeout,
certificates, compression), ``OTEL_PROPAGATORS``.

Spans are exported in the background by the batch processor: an unreachable or
broken endpoint never fails or slows a request. What it could not deliver is
dropped and counted (``divconq_trace_spans_dropped_total{reason}``).

The tracer is per app, not the process-global one (tests run several apps in
one process): the server-span middleware puts the app's ``Tracing`` in a
context variable for the request, and the pipeline and solver code below reach
it with ``current()``. Outside a traced request every helper here is a no-op.

Prompts and completions go into spans only when the standard GenAI content
switch ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` is on.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from service.core.completion import Completion
from service.observability import span_errors, spans
from service.observability.semconv import (
    GEN_AI_FINISH_REASONS,
    GEN_AI_INPUT_MESSAGES,
    GEN_AI_INPUT_TOKENS,
    GEN_AI_OPERATION,
    GEN_AI_OUTPUT_MESSAGES,
    GEN_AI_OUTPUT_TOKENS,
    GEN_AI_PROVIDER,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_RESPONSE_MODEL,
    GEN_AI_WORKFLOW_NAME,
    OP_WORKFLOW,
    SUBQUESTIONS,
)
from service.observability.spans import SpanStarter
from service.observability.trace_setup import Tracing

log = logging.getLogger(__name__)

_current: contextvars.ContextVar[Tracing | None] = contextvars.ContextVar(
    "divconq_tracing", default=None
)


# ``current()``: the request's tracing, when it is traced (None otherwise): the
# context variable's own method (asked on every solver call, traced or not).
current: Callable[[], Tracing | None] = _current.get


# ``enter(tracing)`` makes ``tracing`` the current one (one request) until
# ``leave(token)``: the context variable's own methods (no Python frame between).
enter: Callable[[Tracing], contextvars.Token[Tracing | None]] = _current.set
leave: Callable[[contextvars.Token[Tracing | None]], None] = _current.reset


@contextlib.contextmanager
def using(tracing: Tracing) -> Iterator[None]:
    """Make ``tracing`` the current one for the code run inside."""
    token = enter(tracing)
    try:
        yield
    finally:
        leave(token)


# What every helper gives outside a traced request: the no-op span, nothing done.
_UNTRACED: contextlib.AbstractContextManager[Span] = contextlib.nullcontext(trace.INVALID_SPAN)


# --- spans --------------------------------------------------------------------------


# What a failure writes on a span (kept here for the code that records one).
error_type = span_errors.error_type
record_error = span_errors.record_error


class _Scope:
    """A child span of the current one, current for the code inside, where it is not
    one of ours (``LightSpan`` is its own context manager): what the SDK's
    ``start_as_current_span`` does, without its two generator context managers. A
    failure inside marks the span and goes on up. A span that does not record (an
    unsampled request) is not made current: the request's own non-recording span
    already is."""

    __slots__ = ("_attributes", "_call", "_kind", "_name", "_span", "_token", "_tracer")

    def __init__(
        self,
        tracer: SpanStarter,
        name: str,
        kind: SpanKind,
        attributes: Mapping[str, AttributeValue] | None,
        call: bool,
    ) -> None:
        self._tracer = tracer
        self._name = name
        self._kind = kind
        self._attributes = attributes
        self._call = call

    def __enter__(self) -> Span:
        span_ = self._tracer.start(self._name, self._kind, self._attributes)
        self._span = span_
        # One of ours has just started (it records); the SDK's may not.
        recording = span_.__class__ is spans.LightSpan or span_.is_recording()
        self._token = spans.enter(span_) if recording else None
        return span_

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if self._token is None:
            return
        try:
            if exc is not None:
                record_error(self._span, exc, self._call)
        finally:
            spans.leave(self._token)
            self._span.end()


def span(
    name: str,
    kind: SpanKind,
    attributes: Mapping[str, AttributeValue] | None = None,
    *,
    call: bool = False,
) -> contextlib.AbstractContextManager[Span]:
    """A child span of the current one, when the request is traced (else a no-op span).

    A failure marks it (``error.type``, status ERROR) and goes on up; ``call``:
    the span of one model call (its ``error.type`` is the upstream's status).
    """
    tracing = _current.get()
    if tracing is None or tracing.tracer is None:
        return _UNTRACED
    return _child(tracing.tracer, name, kind, dict(attributes) if attributes else {}, call)


def _child(
    tracer: SpanStarter, name: str, kind: SpanKind, attributes: dict[str, Any], call: bool
) -> contextlib.AbstractContextManager[Span]:
    """A child span of the current one, current for the code inside: ours, as its own
    context manager, under a span of ours; else through ``_Scope``. ``attributes``
    is the span's own (not copied)."""
    parent = spans.own()
    if parent.__class__ is spans.LightSpan:
        return parent.child(name, kind, attributes, call)
    if isinstance(tracer, spans.LightTracer):
        own = tracer.child(name, kind, attributes, call)
        if own is not None:
            return own
    return _Scope(tracer, name, kind, attributes, call)


def workflow(
    name: str, attributes: Mapping[str, AttributeValue]
) -> contextlib.AbstractContextManager[Span]:
    """The span of one pipeline run (``invoke_workflow divconq.static``)."""
    return span(
        f"{OP_WORKFLOW} {name}",
        SpanKind.INTERNAL,
        {GEN_AI_OPERATION: OP_WORKFLOW, GEN_AI_WORKFLOW_NAME: name, **attributes},
    )


class CallSpans:
    """What the spans of one backend's model calls share, made once per backend: the
    name (``chat {model}``), the kind, and the attributes every call knows before
    it is made (operation, provider, request model, and what the backend adds)."""

    __slots__ = ("attributes", "kind", "name")

    def __init__(
        self,
        operation: str,
        model: str,
        provider: str,
        kind: SpanKind,
        attributes: Mapping[str, AttributeValue] | None = None,
    ) -> None:
        self.name = f"{operation} {model}"
        self.kind = kind
        self.attributes: dict[str, AttributeValue] = {
            GEN_AI_OPERATION: operation,
            GEN_AI_PROVIDER: provider,
            GEN_AI_REQUEST_MODEL: model,
            **(attributes or {}),
        }


def model_call(
    spans_: CallSpans,
    attributes: Mapping[str, AttributeValue] | None = None,
    prompt: Sequence[Mapping[str, str]] | str | None = None,
) -> contextlib.AbstractContextManager[Span]:
    """The span of one model call (``chat {model}``, ``text_completion {model}``):
    ``spans_``'s attributes and this call's own (its stage, a retry's count).

    ``prompt`` is recorded only when content capture is on. Every attribute known
    before the call is given at the span's start: one pass of the SDK's checks.
    """
    tracing = _current.get()
    if tracing is None or tracing.tracer is None:
        return _UNTRACED
    # A dict of this span's own: the backend's attributes and this call's.
    attrs = {**spans_.attributes, **attributes} if attributes else dict(spans_.attributes)
    if prompt is not None and tracing.capture_content:
        attrs[GEN_AI_INPUT_MESSAGES] = _input_messages(prompt)
    # Under a span of ours (every model call of a sampled request), its own child:
    # ``_child``'s first step, without its frame (each one costs at a model call,
    # where the code runs with the caches cold).
    parent = spans.own()
    if parent.__class__ is spans.LightSpan:
        return parent.child(spans_.name, spans_.kind, attrs, True)
    return _child(tracing.tracer, spans_.name, spans_.kind, attrs, True)


def record_completion(span_: Span, completion: Completion, response_model: str = "") -> None:
    """What a model call came back with: tokens (when reported), finish reason, model.

    On a span of ours, worked out when the span is handed on, after the
    request has answered (the completion is immutable)."""
    if span_.__class__ is spans.LightSpan:
        span_.late.append((_completed, (completion, response_model)))
    elif span_.is_recording():
        # One call: the SDK takes its lock once per call, not per attribute.
        span_.set_attributes(_completed((completion, response_model)))
    else:
        return
    tracing = _current.get()
    if tracing is not None and tracing.capture_content:
        message = {
            "role": "assistant",
            "parts": [{"type": "text", "content": completion.text}],
            "finish_reason": completion.finish_reason,
        }
        span_.set_attribute(GEN_AI_OUTPUT_MESSAGES, json.dumps([message]))


def _completed(done: tuple[Completion, str]) -> dict[str, AttributeValue]:
    """A model call's span attributes from its completion and response model."""
    completion, response_model = done
    attrs: dict[str, AttributeValue] = {GEN_AI_FINISH_REASONS: (completion.finish_reason,)}
    if completion.usage_reported:
        attrs[GEN_AI_INPUT_TOKENS] = completion.prompt_tokens
        attrs[GEN_AI_OUTPUT_TOKENS] = completion.completion_tokens
    if response_model:
        attrs[GEN_AI_RESPONSE_MODEL] = response_model
    return attrs


class _Tokens(Protocol):
    prompt_tokens: int
    completion_tokens: int


def annotate(key: str, value: AttributeValue) -> None:
    """Set an attribute on the current span (a no-op outside a traced request)."""
    current_span = spans.current()
    if current_span.is_recording():
        current_span.set_attribute(key, value)


def record_run(span_: Span, subquestions: int, usage: _Tokens) -> None:
    """What a pipeline run came to: its subquestions and its tokens in total."""
    if not span_.is_recording():
        return
    span_.set_attributes(
        {
            SUBQUESTIONS: subquestions,
            GEN_AI_INPUT_TOKENS: usage.prompt_tokens,
            GEN_AI_OUTPUT_TOKENS: usage.completion_tokens,
        }
    )
    span_.set_status(Status(StatusCode.OK))


def _input_messages(messages: Sequence[Mapping[str, str]] | str) -> str:
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    value = [
        {"role": m["role"], "parts": [{"type": "text", "content": m["content"]}]} for m in messages
    ]
    return json.dumps(value)


def ids() -> dict[str, Any]:
    """``trace_id`` and ``span_id`` of the current span, hex; {} outside a trace."""
    ctx = spans.current().get_span_context()
    if not ctx.is_valid:
        return {}
    return spans.hex_ids(ctx)
