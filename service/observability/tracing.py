"""OpenTelemetry tracing: the SDK set up from the standard ``OTEL_*`` variables,
the tracer a request's code reaches, and the GenAI semantic-convention names.

Off unless the standard variables turn it on: ``OTEL_TRACES_EXPORTER`` (``otlp``,
``otlp_proto_http``, ``otlp_proto_grpc``, ``console``, any installed exporter's
entry point; ``none`` = off) or an OTLP endpoint (``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``: the exporter is then ``otlp``).
``OTEL_SDK_DISABLED=true`` wins. ``otlp`` speaks gRPC unless
``OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL=http/protobuf`` says HTTP, as the Python
SDK's own auto-configuration does. Everything else is read by the SDK itself:
``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES`` (the resource; the service
name defaults to ``divconq``), ``OTEL_TRACES_SAMPLER(_ARG)``, ``OTEL_BSP_*``
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
import importlib.metadata
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from opentelemetry import trace
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from service import __version__
from service.core.completion import Completion
from service.core.errors import ServiceError, UpstreamError, UpstreamStatusError

log = logging.getLogger(__name__)

# The GenAI semantic conventions followed here: those of OpenTelemetry
# semantic-conventions v1.41.0, the last release before they moved to their own
# repository (open-telemetry/semantic-conventions-genai). They are at
# "development" status: change this one constant (and the names below, where a
# release renamed one) to follow another version. It is the tracer's schema URL.
SEMCONV_VERSION = "1.41.0"
SCHEMA_URL = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"

# --- attribute names --------------------------------------------------------------
GEN_AI_OPERATION = "gen_ai.operation.name"
GEN_AI_PROVIDER = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_TEMPERATURE = "gen_ai.request.temperature"
GEN_AI_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_WORKFLOW_NAME = "gen_ai.workflow.name"
GEN_AI_INPUT_MESSAGES = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES = "gen_ai.output.messages"
ERROR_TYPE = "error.type"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
# HTTP semconv: the ordinal of a resent request (1 = the first retry).
RESEND_COUNT = "http.request.resend_count"
# Operation names (gen_ai.operation.name).
OP_CHAT = "chat"
OP_TEXT_COMPLETION = "text_completion"
OP_WORKFLOW = "invoke_workflow"
# Ours, for what the conventions have no name for.
MODE = "divconq.mode"
SUBQUESTIONS = "divconq.subquestions"
CACHE = "divconq.cache"
CACHE_KIND = "divconq.cache.kind"
CACHE_OUTCOME = "divconq.cache.outcome"
STAGE = "divconq.stage"
ADAPTER = "divconq.decomposer.adapter"
PROFILE = "divconq.solver.profile"
FALLBACK = "divconq.solver.fallback"
USAGE_ESTIMATED = "divconq.usage.estimated"
REQUEST_ID = "divconq.request_id"

# gen_ai.provider.name for each solver backend (others report their own name).
PROVIDERS = {
    "openai": "openai",
    "azure_openai": "azure.ai.openai",
    "anthropic": "anthropic",
    "embedded": "vllm",
}
# Solver backends that run in this process: their calls are INTERNAL spans, not CLIENT.
IN_PROCESS = frozenset({"embedded"})

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
# "true" in the instrumentations' classic form; the newer experimental form
# names where content goes (only span attributes here).
_CAPTURE_ON = frozenset({"true", "span_only", "span_and_event"})
_OTLP_NAMES = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}
# How long shutdown may spend flushing what is queued.
SHUTDOWN_TIMEOUT_MS = 5000

OnDrop = Callable[[str, int], None]


# --- configuration ------------------------------------------------------------------


def _env(name: str) -> str:
    return os.environ.get(name, "").strip()


def exporter_names(env: Mapping[str, str] | None = None) -> list[str]:
    """The trace exporters the standard variables ask for; [] = tracing off."""
    env = os.environ if env is None else env

    def get(name: str) -> str:
        return env.get(name, "").strip()

    if get("OTEL_SDK_DISABLED").lower() == "true":
        return []
    names = [n.strip() for n in get("OTEL_TRACES_EXPORTER").split(",") if n.strip()]
    if not names and (
        get("OTEL_EXPORTER_OTLP_ENDPOINT") or get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        names = ["otlp"]
    if any(n.lower() == "none" for n in names):
        return []
    protocol = get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or get("OTEL_EXPORTER_OTLP_PROTOCOL")
    return [_OTLP_NAMES.get(protocol, "otlp_proto_grpc") if n == "otlp" else n for n in names]


def _exporter(name: str) -> SpanExporter:
    found = importlib.metadata.entry_points(group="opentelemetry_traces_exporter", name=name)
    for entry in found:
        exporter: SpanExporter = entry.load()()
        return exporter
    raise ValueError(f"OTEL_TRACES_EXPORTER: no trace exporter named {name!r} is installed")


def capture_content() -> bool:
    return _env(CAPTURE_CONTENT_ENV).lower() in _CAPTURE_ON


def resource() -> Resource:
    """SDK defaults, then ours, then ``OTEL_RESOURCE_ATTRIBUTES`` / ``OTEL_SERVICE_NAME``."""
    env = OTELResourceDetector().detect().attributes
    return Resource.create({"service.name": "divconq", "service.version": __version__, **env})


class CountingExporter(SpanExporter):
    """Passes batches on; what failed to export is counted as dropped, never raised."""

    def __init__(self, inner: SpanExporter, on_drop: OnDrop) -> None:
        self._inner = inner
        self._on_drop = on_drop

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self._inner.export(spans)
        except Exception:
            log.exception("trace export failed")
            result = SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            self._on_drop("export_failed", len(spans))
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class CountingBatchProcessor(BatchSpanProcessor):
    """The SDK's batch processor, counting the spans it drops because its queue is full
    (the exporter cannot keep up: a slow or unreachable endpoint)."""

    def __init__(self, exporter: SpanExporter, on_drop: OnDrop) -> None:
        super().__init__(exporter)
        self._on_drop = on_drop
        # The SDK keeps the queue private; without it, queue-full drops go uncounted.
        inner = getattr(self, "_batch_processor", None)
        self._queue = getattr(inner, "_queue", None)

    def on_end(self, span: ReadableSpan) -> None:
        queue = self._queue
        if queue is not None and queue.maxlen is not None and len(queue) >= queue.maxlen:
            self._on_drop("queue_full", 1)
        super().on_end(span)


class Tracing:
    """An app's tracer (None: tracing off) and its content setting."""

    def __init__(
        self, provider: TracerProvider | None = None, *, capture_content: bool = False
    ) -> None:
        self.provider = provider
        self.capture_content = capture_content
        self.tracer: trace.Tracer | None = None
        self._owned = False
        if provider is not None:
            self._use(provider)

    def _use(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("divconq", __version__, schema_url=SCHEMA_URL)

    @property
    def enabled(self) -> bool:
        return self.tracer is not None

    def start_from_env(self, on_drop: OnDrop) -> None:
        """Configure from the standard variables, unless a provider was given (tests)."""
        self.capture_content = capture_content()
        if self.provider is not None:
            return
        names = exporter_names()
        if not names:
            return
        provider = TracerProvider(resource=resource())
        for name in names:
            exporter = CountingExporter(_exporter(name), on_drop)
            provider.add_span_processor(CountingBatchProcessor(exporter, on_drop))
        self._use(provider)
        self._owned = True
        log.info("tracing on", extra={"exporters": names, "semconv": SEMCONV_VERSION})

    def shutdown(self) -> None:
        """Flush what is queued (bounded) and stop the exporters this app started."""
        if self._owned and self.provider is not None:
            self.provider.force_flush(SHUTDOWN_TIMEOUT_MS)
            self.provider.shutdown()


_current: contextvars.ContextVar[Tracing | None] = contextvars.ContextVar(
    "divconq_tracing", default=None
)
# The pipeline stage a model call serves (decompose, solve, final), for its span.
_stage: contextvars.ContextVar[str | None] = contextvars.ContextVar("divconq_stage", default=None)


def current() -> Tracing | None:
    """The request's tracing, when it is traced."""
    return _current.get()


@contextlib.contextmanager
def using(tracing: Tracing) -> Iterator[None]:
    """Make ``tracing`` the current one for the code run inside (one request)."""
    token = _current.set(tracing)
    try:
        yield
    finally:
        _current.reset(token)


@contextlib.contextmanager
def stage(name: str) -> Iterator[Span]:
    """Label the model calls made inside with the pipeline stage they serve.

    Opens no span of its own (yields the no-op one): the calls inside do.
    """
    if _current.get() is None:
        yield trace.INVALID_SPAN
        return
    token = _stage.set(name)
    try:
        yield trace.INVALID_SPAN
    finally:
        _stage.reset(token)


# --- spans --------------------------------------------------------------------------


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
    span.set_attribute(ERROR_TYPE, error_type(exc, call))
    if isinstance(exc, ServiceError):
        span.set_status(Status(StatusCode.ERROR, exc.message))
    else:
        # Unexpected: keep the traceback with the span.
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, type(exc).__qualname__))


@contextlib.contextmanager
def span(
    name: str,
    kind: SpanKind,
    attributes: Mapping[str, AttributeValue] | None = None,
    *,
    call: bool = False,
) -> Iterator[Span]:
    """A child span of the current one, when the request is traced (else a no-op span).

    A failure marks it (``error.type``, status ERROR) and goes on up; ``call``:
    the span of one model call (its ``error.type`` is the upstream's status).
    """
    tracing = _current.get()
    if tracing is None or tracing.tracer is None:
        yield trace.INVALID_SPAN
        return
    with tracing.tracer.start_as_current_span(
        name,
        kind=kind,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as current_span:
        try:
            yield current_span
        except BaseException as exc:
            record_error(current_span, exc, call)
            raise


def workflow(
    name: str, attributes: Mapping[str, AttributeValue]
) -> contextlib.AbstractContextManager[Span]:
    """The span of one pipeline run (``invoke_workflow divconq.static``)."""
    return span(
        f"{OP_WORKFLOW} {name}",
        SpanKind.INTERNAL,
        {GEN_AI_OPERATION: OP_WORKFLOW, GEN_AI_WORKFLOW_NAME: name, **attributes},
    )


@contextlib.contextmanager
def model_call(
    operation: str,
    model: str,
    provider: str,
    kind: SpanKind,
    attributes: Mapping[str, AttributeValue] | None = None,
    prompt: Sequence[Mapping[str, str]] | str | None = None,
) -> Iterator[Span]:
    """The span of one model call: ``chat {model}``, ``text_completion {model}``.

    ``prompt`` is recorded only when content capture is on.
    """
    if _current.get() is None:
        yield trace.INVALID_SPAN
        return
    attrs: dict[str, AttributeValue] = {
        GEN_AI_OPERATION: operation,
        GEN_AI_PROVIDER: provider,
        GEN_AI_REQUEST_MODEL: model,
        **(attributes or {}),
    }
    stage_name = _stage.get()
    if stage_name is not None:
        attrs[STAGE] = stage_name
    with span(f"{operation} {model}", kind, attrs, call=True) as call_span:
        if prompt is not None:
            record_input(call_span, prompt)
        yield call_span


def record_completion(span_: Span, completion: Completion, response_model: str = "") -> None:
    """What a model call came back with: tokens (when reported), finish reason, model."""
    if not span_.is_recording():
        return
    # One call: the SDK takes its lock once per call, not per attribute.
    attrs: dict[str, AttributeValue] = {GEN_AI_FINISH_REASONS: [completion.finish_reason]}
    if completion.usage_reported:
        attrs[GEN_AI_INPUT_TOKENS] = completion.prompt_tokens
        attrs[GEN_AI_OUTPUT_TOKENS] = completion.completion_tokens
    if response_model:
        attrs[GEN_AI_RESPONSE_MODEL] = response_model
    span_.set_attributes(attrs)
    tracing = _current.get()
    if tracing is not None and tracing.capture_content:
        message = {
            "role": "assistant",
            "parts": [{"type": "text", "content": completion.text}],
            "finish_reason": completion.finish_reason,
        }
        span_.set_attribute(GEN_AI_OUTPUT_MESSAGES, json.dumps([message]))


class _Tokens(Protocol):
    prompt_tokens: int
    completion_tokens: int


def annotate(key: str, value: AttributeValue) -> None:
    """Set an attribute on the current span (a no-op outside a traced request)."""
    current_span = trace.get_current_span()
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


def record_input(span_: Span, messages: Sequence[Mapping[str, str]] | str) -> None:
    """The prompt, only when content capture is on."""
    tracing = _current.get()
    if tracing is None or not tracing.capture_content or not span_.is_recording():
        return
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    value = [
        {"role": m["role"], "parts": [{"type": "text", "content": m["content"]}]} for m in messages
    ]
    span_.set_attribute(GEN_AI_INPUT_MESSAGES, json.dumps(value))


def ids() -> dict[str, Any]:
    """``trace_id`` and ``span_id`` of the current span, hex; {} outside a trace."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return {}
    return {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}
