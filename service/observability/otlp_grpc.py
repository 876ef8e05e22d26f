"""The OTLP/gRPC span exporter, its batches encoded by ``otlp_encoding``.

The SDK's ``OTLPSpanExporter`` (``opentelemetry-exporter-otlp-proto-grpc``) in
all but the encoding: the same ``OTEL_EXPORTER_OTLP_*`` variables, channel,
retries, reconnection and self-metrics. The batch is written to bytes by
``otlp_encoding.encode_spans`` (a quarter of the SDK encoder's CPU) and sent
by a stub that passes bytes on as they are, in place of the SDK's, which
serialises a protobuf message.

The SDK's exporter makes its stub in ``_initialize_channel_and_stub`` (at
start and to reconnect): ours replaces it there. Where the installed SDK has
another shape (no channel, no stub), ``fast`` is False and batches go the
SDK's own way: slower, never wrong (tests/test_otlp_encoding.py asserts
``fast`` on the SDK we install).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan

from service.observability.otlp_encoding import encode_spans

# The method the SDK's ``TraceServiceStub`` calls (trace_service.proto).
_EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _as_is(data: bytes) -> bytes:
    return data


class _BytesStub:
    """``TraceServiceStub``'s ``Export``, for a request already serialised."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.Export = channel.unary_unary(
            _EXPORT_METHOD,
            request_serializer=_as_is,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )


class OtlpGrpcSpanExporter(OTLPSpanExporter):
    """``OTLPSpanExporter`` (gRPC), encoding with ``otlp_encoding``."""

    fast = False  # until the SDK's channel and stub are seen (its __init__ makes them)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fast = getattr(self, "_client", None) is not None and self._use_bytes_stub()

    def _initialize_channel_and_stub(self) -> None:
        # The SDK makes a new channel and stub here, at start and to reconnect.
        super()._initialize_channel_and_stub()  # type: ignore[no-untyped-call]
        if self.fast:
            self._use_bytes_stub()

    def _use_bytes_stub(self) -> bool:
        """Put our stub on the SDK's channel; False where there is none."""
        channel = getattr(self, "_channel", None)
        if not isinstance(channel, grpc.Channel):
            return False
        # (the SDK types its client as its own stub, or None before the first)
        self._client = _BytesStub(channel)  # type: ignore[assignment]
        return True

    # (bytes where the SDK gives a message: what ``_BytesStub`` sends as it is)
    def _translate_data(self, data: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
        if self.fast:
            return encode_spans(data)  # type: ignore[return-value]
        return super()._translate_data(data)
