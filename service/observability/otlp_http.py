"""The OTLP/HTTP span exporter, its batches encoded by ``otlp_encoding``.

The SDK's ``OTLPSpanExporter`` (``opentelemetry-exporter-otlp-proto-http``) in
all but the encoding: the same ``OTEL_EXPORTER_OTLP_*`` variables (endpoint,
headers, timeout, compression, certificates), the same client, retries,
self-metrics and request size limit. Where the SDK builds and serialises
protobuf objects, ``otlp_encoding.encode_spans`` writes the same bytes at a
quarter of the CPU, on a thread that holds the GIL while the requests wait.

``export`` is the SDK's own, step for step, and uses two of its private
attributes (its HTTP client and its metrics). Where the installed SDK has
another shape, ``fast`` is False and every batch goes through the SDK's own
``export``: slower, never wrong (tests/test_otlp_encoding.py asserts ``fast``
on the SDK we install, so a new shape is seen).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from service.observability.otlp_encoding import encode_spans

log = logging.getLogger(__name__)

try:  # what the SDK's export uses beside its encoder (private: checked, not assumed)
    from opentelemetry.exporter.otlp.proto.http._common import RequestPayloadTooLargeError

    _IMPORTED = True
except ImportError:  # pragma: no cover - another SDK
    _IMPORTED = False

# The attribute the SDK's self-metrics give a failed export (semconv's name).
_ERROR_STATUS_ATTR = "http.response.status_code"


def _has_internals(exporter: OTLPSpanExporter) -> bool:
    client = getattr(exporter, "_client", None)
    metrics = getattr(exporter, "_metrics", None)
    return (
        _IMPORTED
        and callable(getattr(client, "export", None))
        and callable(getattr(metrics, "export_operation", None))
        and isinstance(getattr(exporter, "_max_request_size", None), int)
        and isinstance(getattr(exporter, "_shutdown", None), bool)
    )


class OtlpHttpSpanExporter(OTLPSpanExporter):
    """``OTLPSpanExporter`` (HTTP/protobuf), encoding with ``otlp_encoding``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fast = _has_internals(self)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if not self.fast or self._shutdown:
            return super().export(spans)
        with self._metrics.export_operation(len(spans)) as result:
            try:
                data = encode_spans(spans)
            except Exception as error:
                log.error("Failed to encode span batch: %s", error)
                result.error = error
                return SpanExportResult.FAILURE
            limit = self._max_request_size
            if 0 < limit < len(data):
                log.warning(
                    "Dropping span batch: serialized size %d bytes exceeds "
                    "max_request_size %d bytes.",
                    len(data),
                    limit,
                )
                result.error = RequestPayloadTooLargeError(
                    f"Serialized span request size {len(data)} bytes exceeds "
                    f"max_request_size {limit} bytes."
                )
                return SpanExportResult.FAILURE
            sent = self._client.export(data)
            if not sent.success:
                result.error = sent.error
                result.error_attrs = (
                    {_ERROR_STATUS_ATTR: sent.status_code} if sent.status_code is not None else None
                )
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS
