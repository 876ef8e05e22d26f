"""The pooled HTTP client's request hook: a call made in a traced request carries
its trace, and a model call's span learns which server it went to.

Installed on the app's one ``httpx2.AsyncClient`` only when tracing is on
(``event_hooks={"request": [carry_trace]}``), as OpenTelemetry's httpx
instrumentation does it, so every call through that client (the solvers, an
HTTP decomposer, streamed or whole, to any transport a test gives) carries
W3C ``traceparent`` (and ``tracestate``, ``baggage`` where the configured
propagators write them), whoever made the call.

Why a hook rather than one more header in each call's ``headers``: httpx
merges a call's headers into the client's defaults and normalises each one
on the way (about 3.4 µs more per call for one more header, hot); the hook
writes it into the request already built.

How it is written: ``Headers.__setitem__`` encodes the name and the value,
lower-cases the name and scans every header for an earlier one: 0.95 µs
per call hot, on every model call, against 0.07 µs for appending the pair
(with caches cold, as after the wait for the previous call, it was the
largest part of the hook). The W3C headers of our spans are ASCII, their
names already lower-case, so the hook appends the encoded pair to the list
``Headers`` keeps (``_list``, a private attribute:
``_raw_list_works`` checks once per process that it still holds the headers,
else the hook goes through ``__setitem__``). This hook is the one writer of
trace headers on this client: no backend sets them, so there is no earlier
one to replace.
"""

from __future__ import annotations

import functools

import httpx2

from service.observability import propagation, spans


async def carry_trace(request: httpx2.Request) -> None:
    """Write the current span's context into ``request``; tell the span where it goes."""
    span = spans.own()
    if span.__class__ is spans.LightSpan or span.__class__ is spans.QuietSpan:  # ours
        # Written out here, not in a helper: this runs at every model call, with the
        # caches cold, where each Python frame costs a few microseconds.
        trace_ = span.trace
        plain = trace_.plain  # (``propagation.plain_for``, decided at the first call)
        if plain is None:
            plain = propagation.plain_for(trace_)
        if _RAW_LIST and plain:
            # (``propagation.inject``'s plain path, written straight into the list)
            raw = request.headers._list
            header = trace_.head + span.hex_id + trace_.tail
            raw.append((b"traceparent", b"traceparent", header.encode()))
            if trace_.tracestate:
                raw.append((b"tracestate", b"tracestate", trace_.tracestate.encode()))
        else:
            propagation.inject(request.headers, span)
        if span.__class__ is spans.LightSpan:
            # Its server.address and server.port are worked out when it is handed on.
            span.late.append((server_of, request.url))
        return
    span = spans.current()  # the SDK's span, or the OTel context's
    if spans.carries_trace(span):
        # Sampled or not: the server follows our decision.
        propagation.inject(request.headers, span)
        if span.is_recording():
            span.set_attributes(server_of(request.url))


def _raw_list_works() -> bool:
    """Whether a ``Headers`` keeps its headers as ``(name, lower name, value)`` in
    ``_list``: checked once, by writing one there and reading it back through the
    public API (another httpx2 may not; every header then goes through
    ``__setitem__``)."""
    probe = httpx2.Headers({"a": "1"})
    try:
        probe._list.append((b"traceparent", b"traceparent", b"x"))
        return probe.get("TraceParent") == "x" and probe.raw[-1] == (b"traceparent", b"x")
    except Exception:
        return False


_RAW_LIST = _raw_list_works()


def server_of(url: httpx2.URL) -> dict[str, str | int]:
    """``server.address`` and ``server.port`` of a call's URL."""
    return _server(url.scheme, url.host, url.port)


@functools.lru_cache(maxsize=64)
def _server(scheme: str, host: str, port: int | None) -> dict[str, str | int]:
    # A few servers per process: cached. The spans copy what they are given (ours
    # when handed on), so sharing the dict is safe.
    return {
        "server.address": host,
        "server.port": port if port is not None else (443 if scheme == "https" else 80),
    }
