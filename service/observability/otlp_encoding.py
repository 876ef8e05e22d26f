"""OTLP's protobuf bytes for a batch of spans, written directly: the exporter's hot path.

The SDK's OTLP encoder builds a protobuf object for every span, attribute and
value, then serialises them: about 40 µs per span here, more than the rest of
a span's tracing, on the exporter's thread, which holds the GIL while it
works (CPU a busy replica's requests do not get). This module writes the same
``ExportTraceServiceRequest`` bytes field by field (opentelemetry-proto's
``trace/v1/trace.proto``), with what repeats from span to span encoded once
and kept: the resource and scope (immutable), attribute keys, and short
string, bool and string-tuple attributes (a model, a provider, a route), in
a bounded cache.

The bytes are the SDK encoder's, byte for byte (``tests/test_otlp_encoding.py``
compares them on generated spans): the same grouping by resource and scope,
fields in number order, proto3's defaults left out, a message-typed field
written even when empty (a span's status), a oneof's value written even when
it is the default (an ``AnyValue`` of ``0``, ``""`` or ``False``).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, TraceState

log = logging.getLogger(__name__)

# Wire types: 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32.
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def _tag(field: int, wire: int) -> bytes:
    return _varint((field << 3) | wire)


def _varint(n: int) -> bytes:
    """A base-128 varint; a negative ``int64`` as its 64-bit two's complement."""
    if n < 0:
        n += 1 << 64
    if n < 0x80:
        return _SMALL[n]
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL = [bytes((n,)) for n in range(0x80)]


def _len(field_tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: its tag, the payload's length, the payload."""
    size = len(payload)
    return field_tag + (_SMALL[size] if size < 0x80 else _varint(size)) + payload


def _str(field_tag: bytes, value: str | None) -> bytes:
    """A proto3 string field: nothing when empty (the default)."""
    return _len(field_tag, value.encode()) if value else b""


_pack_double = struct.Struct("<d").pack
_pack_fixed64 = struct.Struct("<Q").pack
_pack_fixed32 = struct.Struct("<I").pack

# AnyValue (common.proto): the oneof ``value``.
_ANY_STRING = _tag(1, _LEN)
_ANY_BOOL = _tag(2, _VARINT)
_ANY_INT = _tag(3, _VARINT)
_ANY_DOUBLE = _tag(4, _I64)
_ANY_ARRAY = _tag(5, _LEN)
_ANY_KVLIST = _tag(6, _LEN)
_ANY_BYTES = _tag(7, _LEN)
# ArrayValue and KeyValueList: ``values`` is field 1; KeyValue: ``key`` 1, ``value`` 2.
_VALUES = _tag(1, _LEN)
_KEY = _tag(1, _LEN)
_VALUE = _tag(2, _LEN)


_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def _any_value(value: Any) -> bytes:
    """An ``AnyValue``'s bytes, as the SDK's ``_encode_value`` chooses its field."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return _ANY_BOOL + (b"\x01" if value else b"\x00")
    if isinstance(value, str):
        return _len(_ANY_STRING, value.encode())
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise ValueError(f"Value out of range: {value}")
        return _ANY_INT + _varint(value)
    if isinstance(value, float):
        return _ANY_DOUBLE + _pack_double(value)
    if isinstance(value, bytes):
        return _len(_ANY_BYTES, value)
    if isinstance(value, Sequence):
        return _len(_ANY_ARRAY, b"".join([_len(_VALUES, _any_value(v)) for v in value]))
    if isinstance(value, Mapping):
        pairs = [_len(_VALUES, _key_value(str(k), v)) for k, v in value.items()]
        return _len(_ANY_KVLIST, b"".join(pairs))
    raise TypeError(f"Invalid type {type(value)} of value {value}")


def _key_value(key: str, value: Any) -> bytes:
    """A ``KeyValue`` (in a ``KeyValueList``: not worth caching)."""
    return _str(_KEY, key) + _len(_VALUE, _any_value(value))


# Encoded KeyValues (their length prefix included) of short strings, bools and tuples
# of strings, which repeat from span to span (a model, a provider, a route); numbers
# (token counts, ports) mostly do not. Bounded in entries, and in size by caching
# only short strings: a captured prompt (content capture on) is one of a kind and
# may be long. Cleared when full. (The value's class is part of the key:
# ``True == 1`` and ``hash(True) == hash(1)``.)
_CACHE_MAX = 4096
_CACHED_STR_MAX = 256
_kv_cache: dict[tuple[str, object, type], bytes] = {}
# A key's ``key`` field and the ``value`` field's tag, for the values not cached.
_key_prefixes: dict[str, bytes] = {}


def _cache_key(key: str, value: Any) -> tuple[str, object, type] | None:
    cls = value.__class__
    if cls is str:
        cached = len(value) <= _CACHED_STR_MAX
    elif cls is tuple:
        cached = all(v.__class__ is str and len(v) <= _CACHED_STR_MAX for v in value)
    else:
        cached = cls is bool
    return (key, value, cls) if cached else None


def _encode_kv(key: str, value: Any) -> bytes:
    """A ``KeyValue`` with its length prefix."""
    prefix = _key_prefixes.get(key)
    if prefix is None:
        if len(_key_prefixes) >= _CACHE_MAX:
            _key_prefixes.clear()
        prefix = _key_prefixes[key] = _str(_KEY, key) + _VALUE
    any_value = _any_value(value)
    size = len(any_value)
    kv = prefix + (_SMALL[size] if size < 0x80 else _varint(size)) + any_value
    size = len(kv)
    return (_SMALL[size] if size < 0x80 else _varint(size)) + kv


def _attributes(field_tag: bytes, attributes: Mapping[str, Any] | None) -> bytes:
    """The repeated ``KeyValue`` field ``field_tag`` of ``attributes``; one that cannot
    be encoded is logged and left out (as the SDK's encoder does)."""
    if not attributes:
        return b""
    out = []
    cache = _kv_cache
    for key, value in attributes.items():
        cache_key = _cache_key(key, value)
        encoded = cache.get(cache_key) if cache_key is not None else None
        if encoded is None:
            try:
                encoded = _encode_kv(key, value)
            except Exception as error:
                log.exception("Failed to encode key %s: %s", key, error)
                continue
            if cache_key is not None:
                if len(cache) >= _CACHE_MAX:
                    cache.clear()
                cache[cache_key] = encoded
        out.append(field_tag)
        out.append(encoded)
    return b"".join(out)


# --- spans ----------------------------------------------------------------------------

# Span (trace.proto), by field number.
_TRACE_ID = _tag(1, _LEN)
_SPAN_ID = _tag(2, _LEN)
_TRACE_STATE = _tag(3, _LEN)
_PARENT_SPAN_ID = _tag(4, _LEN)
_NAME = _tag(5, _LEN)
_KIND = _tag(6, _VARINT)
_START = _tag(7, _I64)
_END = _tag(8, _I64)
_ATTRIBUTES = _tag(9, _LEN)
_DROPPED_ATTRIBUTES = _tag(10, _VARINT)
_EVENTS = _tag(11, _LEN)
_DROPPED_EVENTS = _tag(12, _VARINT)
_LINKS = _tag(13, _LEN)
_DROPPED_LINKS = _tag(14, _VARINT)
_STATUS = _tag(15, _LEN)
_FLAGS = _tag(16, _I32)
# The span flags' bits: "is_remote is known" (always), and "the parent is remote".
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200
# Span.SpanKind: the API's SpanKind plus one (0 is UNSPECIFIED).
_KINDS = {kind: _KIND + _varint(kind.value + 1) for kind in SpanKind}
# Status: ``message`` 2, ``code`` 3 (1 is reserved).
_STATUS_MESSAGE = _tag(2, _LEN)
_STATUS_CODE = _tag(3, _VARINT)
# Span.Event: time 1, name 2, attributes 3, dropped 4.
_EVENT_TIME = _tag(1, _I64)
_EVENT_NAME = _tag(2, _LEN)
_EVENT_ATTRIBUTES = _tag(3, _LEN)
_EVENT_DROPPED = _tag(4, _VARINT)
# Span.Link: trace id 1, span id 2, attributes 4, dropped 5, flags 6 (the SDK's
# encoder writes no trace state, 3, for a link: neither does this).
_LINK_ATTRIBUTES = _tag(4, _LEN)
_LINK_DROPPED = _tag(5, _VARINT)
_LINK_FLAGS = _tag(6, _I32)


def _flags(parent: SpanContext | None) -> bytes:
    remote = parent is not None and parent.is_remote
    return _pack_fixed32(_HAS_IS_REMOTE | _IS_REMOTE if remote else _HAS_IS_REMOTE)


def _trace_state(state: TraceState | None) -> str | None:
    return ",".join(f"{k}={v}" for k, v in state.items()) if state is not None else None


def _uint(field_tag: bytes, n: int | None) -> bytes:
    """A proto3 unsigned integer field: nothing when 0 (the default)."""
    return field_tag + _varint(n) if n else b""


def _fixed64(field_tag: bytes, n: int | None) -> bytes:
    return field_tag + _pack_fixed64(n) if n else b""


def _status(status: Status | None) -> bytes:
    if status is None:
        return b""
    code = status.status_code.value
    body = _str(_STATUS_MESSAGE, status.description) + _uint(_STATUS_CODE, code)
    return _len(_STATUS, body)


def _event(event: Event) -> bytes:
    body = (
        _fixed64(_EVENT_TIME, event.timestamp)
        + _str(_EVENT_NAME, event.name)
        + _attributes(_EVENT_ATTRIBUTES, event.attributes)
        + _uint(_EVENT_DROPPED, event.dropped_attributes)
    )
    return _len(_EVENTS, body)


def _link(link: Link) -> bytes:
    ctx = link.context
    body = (
        _len(_TRACE_ID, ctx.trace_id.to_bytes(16, "big"))
        + _len(_SPAN_ID, ctx.span_id.to_bytes(8, "big"))
        + _attributes(_LINK_ATTRIBUTES, link.attributes)
        + _uint(_LINK_DROPPED, link.dropped_attributes)
        + _LINK_FLAGS
        + _flags(ctx)
    )
    return _len(_LINKS, body)


# The fixed parts: a tag and, for the ids, their length.
_TRACE_ID_16 = _TRACE_ID + b"\x10"
_SPAN_ID_8 = _SPAN_ID + b"\x08"
_PARENT_SPAN_ID_8 = _PARENT_SPAN_ID + b"\x08"
_LOCAL_FLAGS = _FLAGS + _pack_fixed32(_HAS_IS_REMOTE)
_REMOTE_FLAGS = _FLAGS + _pack_fixed32(_HAS_IS_REMOTE | _IS_REMOTE)
# Statuses seen (code, description): most spans' is one of two or three.
_statuses: dict[tuple[int, str | None], bytes] = {}


def _span(span: ReadableSpan) -> bytes:
    """One ``Span`` message's bytes (without its field tag), fields in number order."""
    ctx = span.context
    parent = span.parent
    parts = [
        _TRACE_ID_16,
        ctx.trace_id.to_bytes(16, "big"),
        _SPAN_ID_8,
        ctx.span_id.to_bytes(8, "big"),
    ]
    state = ctx.trace_state
    if state:
        parts.append(_str(_TRACE_STATE, _trace_state(state)))
    if parent is not None:
        parts += (_PARENT_SPAN_ID_8, parent.span_id.to_bytes(8, "big"))
    parts += (_str(_NAME, span.name), _KINDS[span.kind])
    start, end = span.start_time, span.end_time
    if start:
        parts += (_START, _pack_fixed64(start))
    if end:
        parts += (_END, _pack_fixed64(end))
    parts.append(_attributes(_ATTRIBUTES, span.attributes))
    if dropped := span.dropped_attributes:
        parts += (_DROPPED_ATTRIBUTES, _varint(dropped))
    if span.events:
        parts += [_event(e) for e in span.events]
    if dropped := span.dropped_events:
        parts += (_DROPPED_EVENTS, _varint(dropped))
    if span.links:
        parts += [_link(link) for link in span.links]
    if dropped := span.dropped_links:
        parts += (_DROPPED_LINKS, _varint(dropped))
    status = span.status
    if status is not None:
        key = (status.status_code.value, status.description)
        encoded = _statuses.get(key)
        if encoded is None:
            encoded = _status(status)
            if len(_statuses) < 64:  # (a description can come from a failure)
                _statuses[key] = encoded
        parts.append(encoded)
    parts.append(_REMOTE_FLAGS if parent is not None and parent.is_remote else _LOCAL_FLAGS)
    return b"".join(parts)


# --- the request ------------------------------------------------------------------------

# ExportTraceServiceRequest: resource_spans 1. ResourceSpans: resource 1, scope_spans 2,
# schema_url 3. Resource: attributes 1. ScopeSpans: scope 1, spans 2, schema_url 3.
# InstrumentationScope: name 1, version 2, attributes 3.
_RESOURCE_SPANS = _tag(1, _LEN)
_RESOURCE = _tag(1, _LEN)
_SCOPE_SPANS = _tag(2, _LEN)
_SCHEMA_URL = _tag(3, _LEN)
_SCOPE = _tag(1, _LEN)
_SPANS = _tag(2, _LEN)
_SCOPE_NAME = _tag(1, _LEN)
_SCOPE_VERSION = _tag(2, _LEN)
_SCOPE_ATTRIBUTES = _tag(3, _LEN)

# Encoded resources and scopes, by identity: a process has one or a few, and both
# are immutable. Bounded, as the key cache: a resource per batch would be unusual.
_T = TypeVar("_T")
_resources: dict[int, tuple[Resource, bytes]] = {}
_scopes: dict[int, tuple[InstrumentationScope | None, bytes]] = {}


def _by_identity(
    cache: dict[int, tuple[_T, bytes]], item: _T, encode: Callable[[_T], bytes]
) -> bytes:
    """``encode(item)``, kept in ``cache`` for that very object."""
    cached = cache.get(id(item))
    if cached is not None and cached[0] is item:
        return cached[1]
    encoded = encode(item)
    if len(cache) >= 64:
        cache.clear()
    cache[id(item)] = (item, encoded)
    return encoded


def _resource(resource: Resource) -> bytes:
    """A ``ResourceSpans``' ``resource`` field (its ``schema_url`` follows the scopes)."""
    return _len(_RESOURCE, _attributes(_VALUES, resource.attributes))


def _scope(scope: InstrumentationScope | None) -> bytes:
    """A ``ScopeSpans``' ``scope`` field (its ``schema_url`` follows the spans)."""
    if scope is None:
        return _len(_SCOPE, b"")
    body = (
        _str(_SCOPE_NAME, scope.name)
        + _str(_SCOPE_VERSION, scope.version)
        + _attributes(_SCOPE_ATTRIBUTES, scope.attributes)
    )
    return _len(_SCOPE, body)


def encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """The serialised ``ExportTraceServiceRequest`` of ``spans``: grouped by resource,
    then by instrumentation scope, in the order each first appears (as the SDK)."""
    groups: dict[Resource, dict[InstrumentationScope | None, list[bytes]]] = {}
    # Grouped by equality, as the SDK, but a resource is hashed (its attributes
    # dumped to JSON) only when a span's is another object than the span before's.
    last: tuple[object, object] = (None, None)
    encoded: list[bytes] = []
    for span in spans:
        resource, scope = span.resource, span.instrumentation_scope or None
        if resource is not last[0] or scope is not last[1]:
            encoded = groups.setdefault(resource, {}).setdefault(scope, [])
            last = (resource, scope)
        encoded.append(_len(_SPANS, _span(span)))
    out = []
    for resource, by_scope in groups.items():
        body = [_by_identity(_resources, resource, _resource)]
        for scope, encoded in by_scope.items():
            scope_spans = [_by_identity(_scopes, scope, _scope), *encoded]
            if scope is not None:
                scope_spans.append(_str(_SCHEMA_URL, scope.schema_url))
            body.append(_len(_SCOPE_SPANS, b"".join(scope_spans)))
        body.append(_str(_SCHEMA_URL, resource.schema_url))
        out.append(_len(_RESOURCE_SPANS, b"".join(body)))
    return b"".join(out)
