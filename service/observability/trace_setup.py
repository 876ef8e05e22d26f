"""Setting up the OpenTelemetry SDK from the standard ``OTEL_*`` variables, per app.

``Tracing`` owns one app's tracer provider and its batch processor; the exporters
are those the standard variables name, and what they could not deliver is counted
(``divconq_trace_spans_dropped_total{reason}``). The spans are our light ones
(``service.observability.spans``); ``service.observability.tracing`` holds the
helpers request code writes them with.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from collections.abc import Callable, Mapping, Sequence

from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from service import __version__
from service.observability.semconv import (
    CAPTURE_CONTENT_ENV,
    SCHEMA_URL,
    SEMCONV_VERSION,
)
from service.observability.spans import LightTracer, Provider, SdkTracer, SpanStarter

log = logging.getLogger(__name__)

# "true" in the instrumentations' classic form; the newer experimental form
# names where content goes (only span attributes here).
_CAPTURE_ON = frozenset({"true", "span_only", "span_and_event"})


def capture_content() -> bool:
    return _env(CAPTURE_CONTENT_ENV).lower() in _CAPTURE_ON


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


class _HashedResource(Resource):
    """A ``Resource`` that hashes once. The OTLP encoder groups every span it exports
    by its resource, and ``Resource.__hash__`` dumps the attributes to sorted JSON
    each time: about a tenth of the exporter's work per span. A resource is
    immutable, so its hash never changes."""

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource.attributes, resource.schema_url)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash


def resource() -> Resource:
    """SDK defaults, then ours, then ``OTEL_RESOURCE_ATTRIBUTES`` / ``OTEL_SERVICE_NAME``."""
    env = OTELResourceDetector().detect().attributes
    created = Resource.create({"service.name": "divconq", "service.version": __version__, **env})
    return _HashedResource(created)


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
    """An app's tracer (None: tracing off) and its content setting.

    A ``spans.Provider`` (what the standard variables build) gets our light
    spans; any other SDK ``TracerProvider`` (a test's, an embedding
    application's) gets the SDK's own tracer: the same trace, at the SDK's cost.
    """

    def __init__(
        self, provider: TracerProvider | None = None, *, capture_content: bool = False
    ) -> None:
        self.provider = provider
        self.capture_content = capture_content
        self.tracer: SpanStarter | None = None
        self._owned = False
        if provider is not None:
            self._use(provider)

    def _use(self, provider: TracerProvider) -> None:
        self.provider = provider
        if isinstance(provider, Provider):
            scope = InstrumentationScope("divconq", __version__, SCHEMA_URL)
            self.tracer = LightTracer.of(provider, scope)
        else:
            sdk = provider.get_tracer("divconq", __version__, schema_url=SCHEMA_URL)
            self.tracer = SdkTracer(sdk)

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
        processors = [
            CountingBatchProcessor(CountingExporter(_exporter(name), on_drop), on_drop)
            for name in names
        ]
        self._use(Provider(*processors, resource=resource()))
        self._owned = True
        log.info("tracing on", extra={"exporters": names, "semconv": SEMCONV_VERSION})

    def shutdown(self) -> None:
        """Flush what is queued (bounded) and stop the exporters this app started."""
        if isinstance(self.tracer, LightTracer):
            self.tracer.drain()  # spans whose request never ended
        if self._owned and self.provider is not None:
            self.provider.force_flush(SHUTDOWN_TIMEOUT_MS)
            self.provider.shutdown()
