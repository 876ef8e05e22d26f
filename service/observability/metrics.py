"""Every Prometheus metric the service exports, on an explicit registry.

Conventions: one prefix (``divconq_``), base units (``_seconds``, ``_usd``),
``_total`` counters, explicit buckets reaching minutes, and bounded labels
only (mode, stage, status, outcome, configured model names; never question
text, request ids or keys).

Our names must not contain "vllm": vLLM unregisters every collector whose
name does when its engine starts. vLLM's own ``vllm:`` families live in
prometheus_client's global registry; ``/metrics`` serves both.

OpenTelemetry GenAI mapping (see docs/observability.md):
``gen_ai.client.operation.duration`` -> ``divconq_stage_duration_seconds``;
``gen_ai.client.token.usage`` with ``gen_ai.token.type`` input/output ->
``divconq_tokens_total{type}``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from opentelemetry.trace import Span
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.samples import Exemplar

from service.core.completion import Completion
from service.observability import spans

PREFIX = "divconq"
# 10 ms .. 10 min: a CPU decomposer call takes seconds, a socratic request on
# a slow hosted solver can take minutes.
DURATION_BUCKETS = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0
)  # fmt: skip
SUBQUESTION_BUCKETS = (0, 1, 2, 3, 4, 5, 6, 8, 12, 16)

STAGES = ("decompose", "solve", "final")
CACHE_KINDS = ("call", "solve")
CACHE_OUTCOMES = ("hit", "miss", "error")
SOLVER_OUTCOMES = ("ok", "retried", "timeout", "connect_error", "http_error", "invalid_response")
SPAN_DROP_REASONS = ("queue_full", "export_failed")
_EOF = b"# EOF\n"


# The exemplars ``observe`` writes: these two labels, with hex values of fixed length.
_EXEMPLAR_SHAPE = {"trace_id": "0" * 32, "span_id": "0" * 16}


def observe(histogram: Histogram, amount: float) -> None:
    """``histogram.observe(amount)``, with the current sampled trace as the exemplar of
    the bucket it lands in (latency bucket -> trace); no exemplar untraced.

    Exemplars are served in the OpenMetrics exposition only (``render``), which
    Prometheus asks for by default (with ``--enable-feature=exemplar-storage``).
    The count is taken now; the exemplar is set once the request has answered,
    with its spans (``LightSpan.later``, ``LightTracer.hand_on``): at one
    client, the exemplars a ``static`` request writes (one per model call, one
    for the request) cost it about 0.2 ms of latency when written in its
    course. It is set on the bucket directly, without the check
    prometheus_client makes of every exemplar given to its ``observe`` (a
    regex per label name, the 128-character limit): ours always has
    ``_EXEMPLAR_SHAPE``, checked once per app by ``Metrics``.
    """
    histogram.observe(amount)
    span = spans.own()
    if span.__class__ is spans.LightSpan:
        trace_ = span.trace
        if trace_.sampled:  # (``span.later``, without its frame)
            trace_.put_off((_exemplar, (histogram, amount, span, time.time())))
        return
    if span.__class__ is spans.QuietSpan:  # our unsampled request: no exemplar
        return
    span = spans.current()  # the SDK's span, or the OTel context's
    ctx = span.get_span_context()
    if ctx.is_valid and ctx.trace_flags.sampled:
        _exemplar(histogram, amount, span, time.time())


def _exemplar(histogram: Histogram, amount: float, span: Span, when: float) -> None:
    """Set the exemplar of the bucket ``amount`` was counted in.

    prometheus_client has no public call for this: it reads the histogram's
    bounds and buckets as its own ``observe`` does (tests/test_tracing.py
    scrapes the exemplars, so a change there fails a test, not a request).
    """
    for bound, bucket in zip(histogram._upper_bounds, histogram._buckets, strict=True):
        if amount <= bound:
            bucket.set_exemplar(Exemplar(spans.hex_ids(span.get_span_context()), amount, when))
            return


class Metrics:
    """The service's metrics, registered on ``registry`` (one per app)."""

    def __init__(self, registry: CollectorRegistry | None = None, max_in_flight: int = 0) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        # prometheus_client's check of an exemplar, once for the shape ``observe`` writes.
        Histogram("divconq_exemplar_check", "", registry=None).observe(0.0, _EXEMPLAR_SHAPE)
        r = self.registry

        # Every family: the one prefix, this registry.
        def counter(name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
            return Counter(f"{PREFIX}_{name}", doc, labels, registry=r)

        def histogram(
            name: str, doc: str, labels: Sequence[str], buckets: Sequence[float]
        ) -> Histogram:
            return Histogram(f"{PREFIX}_{name}", doc, labels, buckets=buckets, registry=r)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(f"{PREFIX}_{name}", doc, registry=r)

        self.requests = counter(
            "requests",
            "Requests to /solve and /decompose by endpoint, mode and HTTP status.",
            ["endpoint", "mode", "status"],
        )
        self.request_duration = histogram(
            "request_duration_seconds",
            "Wall time of /solve and /decompose requests.",
            ["endpoint", "mode"],
            buckets=DURATION_BUCKETS,
        )
        self.in_flight = gauge(
            "requests_in_flight",
            "Requests to /solve and /decompose being processed now.",
        )
        self.in_flight_limit = gauge(
            "requests_in_flight_limit",
            "Configured bound on requests in flight (DIVCONQ_MAX_IN_FLIGHT), for saturation.",
        )
        self.stage_duration = histogram(
            "stage_duration_seconds",
            "Wall time of one model call by stage (decompose, solve, final) and model "
            "(OTel gen_ai.client.operation.duration).",
            ["stage", "model"],
            buckets=DURATION_BUCKETS,
        )
        self.tokens = counter(
            "tokens",
            "Tokens by stage, type (input, output) and model (OTel gen_ai.client.token.usage).",
            ["stage", "type", "model"],
        )
        self.cost = counter(
            "cost_usd",
            "Estimated cost in USD by stage and model, from DIVCONQ_PRICES.",
            ["stage", "model"],
        )
        self.calculator = counter(
            "calculator_calls",
            "Calculator annotations the embedded model closed, by outcome: computed (its "
            "value was right), corrected (the service wrote the true value), rejected "
            "(malformed or unsafe: left as written).",
            ["outcome"],
        )
        self.usage_estimated = counter(
            "usage_estimated_calls",
            "Model calls whose backend reported no usage, so their tokens were counted "
            "with a tokenizer here, by stage and model.",
            ["stage", "model"],
        )
        self.solver_calls = counter(
            "solver_calls",
            "Solver calls by outcome (ok, retried, timeout, connect_error, http_error, "
            "invalid_response).",
            ["outcome"],
        )
        self.subquestions = histogram(
            "subquestions_per_request",
            "Subquestions used per /solve request, by mode.",
            ["mode"],
            buckets=SUBQUESTION_BUCKETS,
        )
        self.cache_lookups = counter(
            "cache_lookups",
            "Response cache lookups by kind (call: one solver call; solve: a whole /solve) "
            "and outcome (hit, miss, error: the store failed, served uncached).",
            ["kind", "outcome"],
        )
        self.spans_dropped = counter(
            "trace_spans_dropped",
            "Trace spans never delivered, by reason: queue_full (the exporter fell behind) "
            "or export_failed (the trace endpoint was unreachable or refused the batch).",
            ["reason"],
        )
        # Per key (its configured name, never its secret): a bounded label.
        self.key_requests = counter(
            "key_requests",
            "API requests by key name, endpoint and HTTP status.",
            ["key", "endpoint", "status"],
        )
        self.key_tokens = counter(
            "key_tokens",
            "Tokens (input and output, all stages) spent by key name.",
            ["key"],
        )
        self.key_cost = counter(
            "key_cost_usd",
            "Estimated cost in USD (DIVCONQ_PRICES) spent by key name.",
            ["key"],
        )
        self.limit_rejections = counter(
            "limit_rejections",
            "Requests refused with 429 by key name and limit (requests_per_minute, "
            "tokens_per_minute, usd_per_day).",
            ["key", "limit"],
        )
        self.limit_store_errors = counter(
            "limit_store_errors",
            "Calls to the limits store (Redis) that failed, by operation (admit, settle, "
            "ping) and the policy that applied (allow: admitted uncounted; deny: 503).",
            ["op", "policy"],
        )
        self.ledger_rows = counter(
            "ledger_rows",
            "Request ledger rows by outcome: written, dropped (the queue was full), failed "
            "(the database refused the batch).",
            ["outcome"],
        )
        # Pre-create the bounded label sets, so rate() and dashboards see zeros
        # rather than absent series before the first event.
        for outcome in SOLVER_OUTCOMES:
            self.solver_calls.labels(outcome)
        for outcome in ("written", "dropped", "failed"):
            self.ledger_rows.labels(outcome)
        for kind in CACHE_KINDS:
            for outcome in CACHE_OUTCOMES:
                self.cache_lookups.labels(kind, outcome)
        for reason in SPAN_DROP_REASONS:
            self.spans_dropped.labels(reason)
        self.in_flight_limit.set(max_in_flight)
        # The same count as the gauge, readable without private attributes.
        self.active = 0

    def model_call(
        self, stage: str, model: str, completion: Completion, seconds: float, cost_usd: float
    ) -> None:
        observe(self.stage_duration.labels(stage, model), seconds)
        self.tokens.labels(stage, "input", model).inc(completion.prompt_tokens)
        self.tokens.labels(stage, "output", model).inc(completion.completion_tokens)
        # inc(0) too: the series exists (at 0) even where no price is configured.
        self.cost.labels(stage, model).inc(cost_usd)

    def span_dropped(self, reason: str, count: int) -> None:
        """The trace exporter's drop hook (called from its thread; counters are thread-safe)."""
        self.spans_dropped.labels(reason).inc(count)

    def exposition(self) -> bytes:
        """Our families, then vLLM's (and the process collectors) from the global registry."""
        return generate_latest(self.registry) + generate_latest(REGISTRY)

    def render(self, accept: str) -> tuple[bytes, str]:
        """``exposition`` in the format the scraper's ``Accept`` asks for, and its type.

        OpenMetrics (what Prometheus asks for first) carries the latency
        histograms' exemplars; the classic text format has no place for them.
        """
        encode, content_type = choose_encoder(accept)
        ours, theirs = encode(self.registry), encode(REGISTRY)
        if ours.endswith(_EOF):  # one OpenMetrics document: one EOF, at its end
            ours = ours[: -len(_EOF)]
        return ours + theirs, content_type


CONTENT_TYPE = CONTENT_TYPE_LATEST
