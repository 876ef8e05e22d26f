"""Setting up the OpenTelemetry SDK from the standard ``OTEL_*`` variables, per app.

``Tracing`` owns one app's tracer provider and its batch processor; the exporters
are those the standard variables name, and what they could not deliver is counted
(``divconq_trace_spans_dropped_total{reason}``). The spans are our light ones
(``service.observability.spans``); ``service.observability.tracing`` holds the
helpers request code writes them with.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from opentelemetry.environment_variables import OTEL_PYTHON_ID_GENERATOR
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.environment_variables import OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import Sampler
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from service import __version__
from service.observability.otlp_http import OtlpHttpSpanExporter
from service.observability.semconv import (
    CAPTURE_CONTENT_ENV,
    SCHEMA_URL,
    SEMCONV_VERSION,
)
from service.observability.spans import LightTracer, Provider, SdkTracer, SpanStarter

log = logging.getLogger(__name__)

_T = TypeVar("_T")

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


def _load(group: str, name: str, variable: str, what: str) -> object:
    """The object an installed package registers as ``name`` in the entry-point
    ``group`` (how the SDK's auto-configuration finds what a variable names)."""
    for entry in importlib.metadata.entry_points(group=group, name=name):
        return entry.load()
    raise ValueError(f"{variable}: no {what} named {name!r} is installed")


def _load_class(group: str, name: str, variable: str, what: str, base: type[_T]) -> type[_T]:
    """``_load``'s object, which must be a subclass of ``base``."""
    found = _load(group, name, variable, what)
    if not (isinstance(found, type) and issubclass(found, base)):
        raise ValueError(f"{variable}: {name!r} is no {what}")
    return found


def _exporter_class(name: str) -> type[SpanExporter]:
    return _load_class(
        "opentelemetry_traces_exporter",
        name,
        "OTEL_TRACES_EXPORTER",
        "trace exporter",
        SpanExporter,
    )


_SDK_GRPC_MODULE = "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"


def _exporter(name: str) -> SpanExporter:
    """The exporter ``name`` names; the SDK's OTLP ones as ours, which encode their
    batches four times faster (``otlp_http``, ``otlp_grpc``)."""
    cls = _exporter_class(name)
    if cls is OTLPSpanExporter:
        return OtlpHttpSpanExporter()
    if cls.__module__ == _SDK_GRPC_MODULE:
        # Imported only here: gRPC is loaded only where it is asked for.
        from service.observability.otlp_grpc import OtlpGrpcSpanExporter

        if cls is OtlpGrpcSpanExporter.__base__:
            return OtlpGrpcSpanExporter()
    return cls()


def id_generator_name() -> str:
    """What ``OTEL_PYTHON_ID_GENERATOR`` names (``random`` when unset, as the SDK)."""
    return _env(OTEL_PYTHON_ID_GENERATOR) or "random"


def _id_generator_class(name: str) -> type[IdGenerator]:
    # (An abstract base: what is loaded must be a concrete subclass of it.)
    group, variable = "opentelemetry_id_generator", OTEL_PYTHON_ID_GENERATOR
    return _load_class(group, name, variable, "id generator", IdGenerator)  # type: ignore[type-abstract]


def id_generator() -> IdGenerator:
    """The trace and span ids' generator ``OTEL_PYTHON_ID_GENERATOR`` names, found as
    the SDK's auto-configuration finds it: ``random`` (the default), or another an
    installed package registers, such as ``xray`` (opentelemetry-sdk-extension-aws:
    trace ids that begin with their start time, as AWS X-Ray needs)."""
    return _id_generator_class(id_generator_name())()


# The SDK's samplers whose argument is a ratio (the others get the raw string).
_RATIO_SAMPLERS = frozenset({"traceidratio", "parentbased_traceidratio"})


def sampler() -> Sampler | None:
    """The sampler ``OTEL_TRACES_SAMPLER`` names, with ``OTEL_TRACES_SAMPLER_ARG``,
    found as the SDK's auto-configuration finds it: an
    ``opentelemetry_traces_sampler`` entry point (the SDK's own ``always_on``,
    ``always_off``, ``traceidratio`` and their ``parentbased_`` forms, or one an
    installed package registers). None when unset: the SDK's default
    (``parentbased_always_on``).

    Where the SDK warns and samples every request, a name nothing installs
    or a ratio that is not one is an error here (``config_problem``): a typo
    must not mean tracing everything.
    """
    name = _env(OTEL_TRACES_SAMPLER).lower()
    if not name:
        return None
    factory = _load("opentelemetry_traces_sampler", name, OTEL_TRACES_SAMPLER, "sampler")
    arg = _env(OTEL_TRACES_SAMPLER_ARG)
    value: float | str | None = arg or None
    if name in _RATIO_SAMPLERS:
        try:
            value = float(arg) if arg else 1.0
        except ValueError:
            value = -1.0
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{OTEL_TRACES_SAMPLER_ARG}: {arg!r} is not a ratio from 0 to 1")
    made = factory(value) if callable(factory) else None
    if not isinstance(made, Sampler):
        raise ValueError(f"{OTEL_TRACES_SAMPLER}: {name!r} is not a sampler")
    return made


def _propagators_problem() -> str | None:
    """A name in ``OTEL_PROPAGATORS`` that nothing installs. ``opentelemetry.propagate``
    loads them when first imported (tracing on or off) and raises there."""
    configured = os.environ.get("OTEL_PROPAGATORS")
    if not configured:  # (unset or empty: the API's defaults)
        return None
    for name in configured.split(","):
        name = name.strip()
        if name.lower() == "none":  # (as the API: no propagator at all)
            return None
        if not importlib.metadata.entry_points(group="opentelemetry_propagator", name=name):
            return f"OTEL_PROPAGATORS: no propagator named {name!r} is installed"
    return None


def config_problem() -> str | None:
    """What is wrong with what the standard variables name (a propagator, a trace
    exporter, the id generator or the sampler: not installed, or a sampler
    argument it cannot take), in one line; None when nothing is. Exporters, ids
    and sampling are checked only when tracing is on.

    Nothing is imported that would fail on them, and nothing is started or
    connected: ``divconq serve`` asks first, so a typo is one line at start-up,
    not a traceback or an app that fails to start.
    """
    if (problem := _propagators_problem()) is not None:
        return problem
    names = exporter_names()
    if not names:
        return None
    try:
        for name in names:
            _exporter_class(name)
        _id_generator_class(id_generator_name())
        sampler()
    except ValueError as exc:
        return str(exc)
    except Exception as exc:  # an installed entry point that fails to import
        return f"tracing set-up: {type(exc).__name__}: {exc}"
    return None


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


@functools.cache
def instance_id() -> str:
    """This process's ``service.instance.id``: random, as the semantic conventions
    suggest where nothing better names the instance (a pod does:
    deploy/k8s/base/deployment.yaml sets it in ``OTEL_RESOURCE_ATTRIBUTES``).
    Without it every replica's spans carry the same resource, and a slow trace
    does not say which replica served it."""
    return str(uuid.uuid4())


def resource() -> Resource:
    """SDK defaults, then ours, then ``OTEL_RESOURCE_ATTRIBUTES`` / ``OTEL_SERVICE_NAME``."""
    env = OTELResourceDetector().detect().attributes
    ours = {"service.name": "divconq", "service.version": __version__}
    created = Resource.create({**ours, "service.instance.id": instance_id(), **env})
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
        # Before the processors: a wrong name starts no thread.
        ids, sampling = id_generator(), sampler()
        processors = [
            CountingBatchProcessor(CountingExporter(_exporter(name), on_drop), on_drop)
            for name in names
        ]
        self._use(Provider(*processors, resource=resource(), id_generator=ids, sampler=sampling))
        self._owned = True
        log.info(
            "tracing on",
            extra={"exporters": names, "ids": id_generator_name(), "semconv": SEMCONV_VERSION},
        )

    def shutdown(self) -> None:
        """Flush what is queued (bounded) and stop the exporters this app started."""
        if isinstance(self.tracer, LightTracer):
            self.tracer.drain()  # spans whose request never ended
        if self._owned and self.provider is not None:
            self.provider.force_flush(SHUTDOWN_TIMEOUT_MS)
            self.provider.shutdown()
