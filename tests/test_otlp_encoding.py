"""Our OTLP encoder writes what the SDK's would, and the OTLP/HTTP exporter sends it.

``otlp_encoding.encode_spans`` must give, byte for byte, what the SDK's
``encode_spans(...).SerializePartialToString()`` gives: checked on generated
spans (every attribute type, events, links, statuses, remote and local parents,
several resources and scopes) and on the spans a real request makes. The
exporter is then run as the service runs it, against a real HTTP receiver.
"""

from __future__ import annotations

import concurrent.futures
import logging
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceState

from service.observability import otlp_encoding, trace_setup
from service.observability.otlp_grpc import OtlpGrpcSpanExporter
from service.observability.otlp_http import OtlpHttpSpanExporter
from tests.fakes import Q, ScriptedSolver, serve, settings_for
from tests.otlp_receiver import Receiver


def sdk_bytes(spans: list[ReadableSpan]) -> bytes:
    encoded: bytes = sdk_encode(spans).SerializePartialToString()
    return encoded


# --- generated spans --------------------------------------------------------------------

ints64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
scalars = st.one_of(st.text(max_size=20), st.booleans(), ints64, st.floats())
values = st.one_of(
    scalars,
    st.lists(st.text(max_size=8), max_size=3).map(tuple),
    st.lists(st.booleans(), max_size=3).map(tuple),
    st.lists(ints64, max_size=3).map(tuple),
    st.lists(st.floats(), max_size=3).map(tuple),
)
# What no span of ours holds, but the SDK's encoder takes: None, bytes, a mapping.
unusual = st.one_of(
    st.none(), st.binary(max_size=8), st.dictionaries(st.text(max_size=4), scalars, max_size=2)
)
attribute_maps = st.dictionaries(st.text(max_size=12), values, max_size=6)


@st.composite
def bounded(draw: st.DrawFn) -> Any:
    """A plain dict, or the SDK's bounded map with some attributes dropped."""
    attrs = draw(attribute_maps)
    if draw(st.booleans()):
        return attrs | draw(st.dictionaries(st.text(max_size=12), unusual, max_size=2))
    return BoundedAttributes(draw(st.integers(0, 3)), attrs, immutable=True)


@st.composite
def contexts(draw: st.DrawFn, remote: bool | None = None) -> SpanContext:
    state = draw(
        st.sampled_from([TraceState(), TraceState([("vendor", "a1")]), TraceState([("x", "1")])])
    )
    return SpanContext(
        trace_id=draw(st.integers(1, 2**128 - 1)),
        span_id=draw(st.integers(1, 2**64 - 1)),
        is_remote=draw(st.booleans()) if remote is None else remote,
        trace_state=state,
    )


RESOURCES = [
    Resource.create({"service.name": "a"}),
    Resource({"service.name": "b", "n": 3}, schema_url="https://example.test/s"),
]
SCOPES = [
    None,
    InstrumentationScope("divconq", "1.0", "https://opentelemetry.io/schemas/1.37.0"),
    InstrumentationScope("other", None, None, {"k": "v"}),
]


@st.composite
def spans(draw: st.DrawFn) -> ReadableSpan:
    start = draw(st.integers(0, 2**63))
    events = draw(
        st.lists(
            st.builds(Event, st.text(max_size=10), bounded(), st.integers(0, 2**63)), max_size=2
        )
    )
    links = draw(st.lists(st.builds(Link, contexts(), bounded()), max_size=2))
    status = draw(
        st.one_of(
            st.just(Status()),
            st.just(Status(StatusCode.OK)),
            st.builds(Status, st.just(StatusCode.ERROR), st.one_of(st.none(), st.text())),
        )
    )
    return ReadableSpan(
        name=draw(st.text(max_size=20)),
        context=draw(contexts(remote=False)),
        parent=draw(st.one_of(st.none(), contexts())),
        resource=draw(st.sampled_from(RESOURCES)),
        attributes=draw(bounded()),
        events=events,
        links=links,
        kind=draw(st.sampled_from(list(SpanKind))),
        status=status,
        start_time=start,
        end_time=draw(st.one_of(st.none(), st.integers(start, 2**64 - 1))),
        instrumentation_scope=draw(st.sampled_from(SCOPES)),
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(spans(), max_size=6))
def test_generated_spans_encode_byte_for_byte_as_the_sdk(batch: list[ReadableSpan]) -> None:
    assert otlp_encoding.encode_spans(batch) == sdk_bytes(batch)


def test_a_value_out_of_range_is_left_out_as_the_sdk_leaves_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An int beyond int64 (the SDK's protobuf refuses it): that attribute alone goes."""
    span = ReadableSpan(
        name="s",
        context=SpanContext(1, 2, False),
        attributes={"big": 2**64, "tokens": 7, "ok": "yes"},
        resource=RESOURCES[0],
    )
    with caplog.at_level(logging.ERROR):
        ours = otlp_encoding.encode_spans([span])
    assert ours == sdk_bytes([span])
    decoded = ExportTraceServiceRequest.FromString(ours)
    (encoded,) = decoded.resource_spans[0].scope_spans[0].spans
    assert [a.key for a in encoded.attributes] == ["tokens", "ok"]
    assert "Failed to encode key big" in caplog.text


# --- real spans, a real receiver -------------------------------------------------------


def test_the_standard_variables_get_our_otlp_exporters() -> None:
    http = trace_setup._exporter("otlp_proto_http")
    grpc_ = trace_setup._exporter("otlp_proto_grpc")
    try:
        # The installed SDK has the shape ours use: batches take the fast path.
        assert isinstance(http, OtlpHttpSpanExporter)
        assert http.fast
        assert isinstance(grpc_, OtlpGrpcSpanExporter)
        assert grpc_.fast
        # A reconnection (the SDK makes a new channel and stub) keeps ours.
        grpc_._initialize_channel_and_stub()
        assert type(grpc_._client).__name__ == "_BytesStub"
    finally:
        http.shutdown()  # type: ignore[no-untyped-call]
        grpc_.shutdown()


async def test_a_served_requests_spans_reach_a_receiver_as_the_sdk_would_send_them(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``static`` request's spans, exported by the service as configured; then the
    same spans sent by the SDK's own exporter: the receiver decodes the same."""
    sent: list[ReadableSpan] = []
    export = OtlpHttpSpanExporter.export

    def keep(self: OtlpHttpSpanExporter, spans: Any) -> SpanExportResult:
        sent.extend(spans)
        return export(self, spans)

    monkeypatch.setattr(OtlpHttpSpanExporter, "export", keep)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    async with serve(settings_for(cache={"enabled": False}), ScriptedSolver("ok")) as client:
        resp = await client.post("/solve", json={"question": Q, "mode": "static"})
    assert resp.status_code == 200, resp.text
    ours = list(receiver.requests)
    assert len(sent) == sum(
        len(ss.spans) for r in ours for rs in r.resource_spans for ss in rs.scope_spans
    )
    assert {s.name for s in sent} >= {"POST /solve", "invoke_workflow divconq.static"}

    sdk = OTLPSpanExporter(endpoint=f"{receiver.url}/v1/traces")
    try:
        assert sdk.export(sent) is SpanExportResult.SUCCESS
    finally:
        sdk.shutdown()  # type: ignore[no-untyped-call]
    theirs = receiver.requests[len(ours) :]
    merged = ExportTraceServiceRequest()
    for request in ours:
        merged.resource_spans.extend(request.resource_spans)
    assert len(theirs) == 1
    assert merged == theirs[0] or _spans(merged) == _spans(theirs[0])


def _spans(request: ExportTraceServiceRequest) -> list[bytes]:
    return sorted(
        span.SerializeToString()
        for rs in request.resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    )


def test_without_the_sdks_internals_batches_go_through_its_own_export(
    receiver: Receiver,
) -> None:
    """An SDK of another shape (``fast`` false): slower, still delivered."""
    exporter = OtlpHttpSpanExporter(endpoint=f"{receiver.url}/v1/traces")
    exporter.fast = False
    span = ReadableSpan(
        name="s", context=SpanContext(5, 6, False), attributes={"a": 1}, resource=RESOURCES[0]
    )
    try:
        assert exporter.export([span]) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()  # type: ignore[no-untyped-call]
    (request,) = receiver.requests
    assert request.SerializeToString() == sdk_bytes([span])


def test_a_batch_over_the_size_limit_is_dropped_not_sent(receiver: Receiver) -> None:
    exporter = OtlpHttpSpanExporter(endpoint=f"{receiver.url}/v1/traces", max_request_size=64)
    span = ReadableSpan(name="s" * 100, context=SpanContext(5, 6, False), resource=RESOURCES[0])
    try:
        assert exporter.export([span]) is SpanExportResult.FAILURE
    finally:
        exporter.shutdown()  # type: ignore[no-untyped-call]
    assert receiver.requests == []


def test_over_grpc_a_collector_gets_the_bytes_the_sdks_exporter_sends() -> None:
    """A gRPC server that keeps each request's bytes undecoded: ours and the SDK's
    exporter send it the same."""
    got: list[bytes] = []

    def export(request: bytes, context: Any) -> ExportTraceServiceResponse:
        got.append(request)
        return ExportTraceServiceResponse()

    handler = grpc.method_handlers_generic_handler(
        "opentelemetry.proto.collector.trace.v1.TraceService",
        {
            "Export": grpc.unary_unary_rpc_method_handler(
                export, response_serializer=ExportTraceServiceResponse.SerializeToString
            )
        },
    )
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    parent = SpanContext(7, 8, True, trace_state=TraceState([("vendor", "a1")]))
    batch = [
        ReadableSpan(
            name="chat big-solver",
            context=SpanContext(7, 9, False),
            parent=parent,
            attributes={"gen_ai.usage.input_tokens": 80, "gen_ai.finish_reasons": ("stop",)},
            events=[Event("exception", {"exception.type": "TimeoutError"}, 5)],
            kind=SpanKind.CLIENT,
            status=Status(StatusCode.ERROR, "timed out"),
            resource=RESOURCES[0],
            instrumentation_scope=SCOPES[1],
            start_time=1,
            end_time=2,
        ),
        ReadableSpan(name="POST /solve", context=parent, resource=RESOURCES[1]),
    ]
    try:
        for cls in (OtlpGrpcSpanExporter, GrpcSpanExporter):
            exporter = cls(endpoint=f"http://127.0.0.1:{port}", insecure=True)
            try:
                assert exporter.export(batch) is SpanExportResult.SUCCESS
            finally:
                exporter.shutdown()
    finally:
        server.stop(grace=None)
    assert got == [sdk_bytes(batch)] * 2


def test_long_values_are_encoded_but_not_kept() -> None:
    """A captured prompt is one of a kind: encoded as any value, not cached."""
    prompt = "x" * 10_000
    span = ReadableSpan(
        name="chat m",
        context=SpanContext(1, 2, False),
        attributes={"gen_ai.input.messages": prompt, "gen_ai.provider.name": "openai"},
        resource=RESOURCES[0],
    )
    otlp_encoding._kv_cache.clear()
    assert otlp_encoding.encode_spans([span]) == sdk_bytes([span])
    assert [key for key, _, _ in otlp_encoding._kv_cache] == ["gen_ai.provider.name"]
