"""Our light spans (``service.observability.spans``) keep the SDK's rules.

The span trees themselves are checked in tests/test_tracing.py, once with our
spans and once with the SDK's. Here: what a sampler decides, the standard
limits, and values the SDK would refuse.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from opentelemetry import context, trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind, Status, StatusCode

from service.observability import spans, trace_setup
from service.observability.spans import LightSpan, LightTracer, Provider
from tests.fakes import ScriptedSolver
from tests.test_tracing import TRACE_ID, _solve_traced, traced

SCOPE = InstrumentationScope("divconq", "test")


def _setup(monkeypatch: pytest.MonkeyPatch, **env: str) -> tuple[Provider, InMemorySpanExporter]:
    for name in ("OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    exporter = InMemorySpanExporter()
    # The provider reads the sampler and the limits from the environment, as the SDK's.
    return Provider(SimpleSpanProcessor(exporter)), exporter


def _flags(traceparent: str) -> str:
    return traceparent.split("-")[3]


async def test_an_unsampled_caller_gets_no_spans_but_the_solver_gets_its_trace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider, exporter = _setup(monkeypatch)  # parentbased_always_on: the caller decides
    solver = ScriptedSolver("ok")
    unsampled = f"00-{TRACE_ID}-00f067aa0ba902b7-00"
    async with traced(provider, solver=solver) as client:
        resp = await client.post(
            "/solve",
            json={"question": "What is 2 + 3?", "mode": "static"},
            headers={"traceparent": unsampled},
        )
    assert resp.status_code == 200, resp.text
    assert exporter.get_finished_spans() == ()
    # The trace still goes on, unsampled: the solver follows our decision.
    sent = [h["traceparent"] for h in solver.headers]
    assert sent and {p.split("-")[1] for p in sent} == {TRACE_ID}
    assert {_flags(p) for p in sent} == {"00"}
    assert resp.headers["traceresponse"].startswith(f"00-{TRACE_ID}-")
    assert _flags(resp.headers["traceresponse"]) == "00"


async def test_always_off_records_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    provider, exporter = _setup(monkeypatch, OTEL_TRACES_SAMPLER="always_off")
    solver = ScriptedSolver("ok")
    async with traced(provider, solver=solver) as client:
        resp = await _solve_traced(client, mode="static")
    assert resp.status_code == 200, resp.text
    assert exporter.get_finished_spans() == ()
    assert {_flags(h["traceparent"]) for h in solver.headers} == {"00"}


async def test_a_request_we_do_not_sample_still_continues_the_callers_trace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Our sampler drops the request (the caller sampled it): no span, yet every
    solver call carries the caller's trace, its ``tracestate``, our flag, and our
    server span's id as the parent, the one ``traceresponse`` names."""
    provider, exporter = _setup(monkeypatch, OTEL_TRACES_SAMPLER="always_off")
    solver = ScriptedSolver("ok")
    async with traced(provider, solver=solver) as client:
        resp = await client.post(
            "/solve",
            json={"question": "What is 2 + 3?", "mode": "static"},
            headers={"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01", "tracestate": "ven=1"},
        )
    assert resp.status_code == 200, resp.text
    assert exporter.get_finished_spans() == ()
    version, trace_id, ours, flags = resp.headers["traceresponse"].split("-")
    assert (version, trace_id, flags) == ("00", TRACE_ID, "00")
    assert ours != "00f067aa0ba902b7"
    assert len(solver.headers) == 3  # two subquestions and the final answer
    assert {h["traceparent"] for h in solver.headers} == {f"00-{TRACE_ID}-{ours}-00"}
    assert {h["tracestate"] for h in solver.headers} == {"ven=1"}


def test_an_unsampled_root_is_the_current_span_for_every_step_under_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No span per step of a request we do not sample: the helpers get its root, which
    still writes the request's ``traceparent``."""
    provider, exporter = _setup(monkeypatch, OTEL_TRACES_SAMPLER="always_off")
    tracer = LightTracer.of(provider, SCOPE)
    root = tracer.start("POST", SpanKind.SERVER)
    assert isinstance(root, spans.QuietSpan) and not root.is_recording()
    ctx = root.get_span_context()
    assert root.traceparent() == f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-00"
    token = spans.enter(root)
    try:
        step = tracer.child("chat stub", SpanKind.CLIENT, {}, call=True)
        assert step is not None
        with step as inside:
            assert inside is root and spans.current() is root
        assert tracer.start("invoke_workflow x", SpanKind.INTERNAL) is root
    finally:
        spans.leave(token)
    root.end()
    provider.force_flush()
    assert exporter.get_finished_spans() == ()


async def test_a_ratio_sampler_keeps_or_drops_whole_requests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider, exporter = _setup(
        monkeypatch, OTEL_TRACES_SAMPLER="traceidratio", OTEL_TRACES_SAMPLER_ARG="0.5"
    )
    async with traced(provider) as client:
        for _ in range(40):
            resp = await client.post(
                "/solve", json={"question": "What is 2 + 3?", "mode": "static"}
            )
            assert resp.status_code == 200, resp.text
    by_trace: dict[int, list[str]] = {}
    for span in exporter.get_finished_spans():
        assert span.context is not None
        by_trace.setdefault(span.context.trace_id, []).append(span.name)
    # About half the requests; each one kept whole (server, workflow, 4 model calls).
    assert 0 < len(by_trace) < 40
    assert {len(names) for names in by_trace.values()} == {6}


async def test_the_standard_attribute_limits_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    provider, exporter = _setup(
        monkeypatch, OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT="3", OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT="4"
    )
    async with traced(provider) as client:
        resp = await _solve_traced(client)
    assert resp.status_code == 200, resp.text
    spans = exporter.get_finished_spans()
    assert len(spans) == 3
    for span in spans:
        attrs = dict(span.attributes or {})
        assert len(attrs) <= 3, (span.name, attrs)
        assert span.dropped_attributes > 0, span.name
        assert all(len(v) <= 4 for v in attrs.values() if isinstance(v, str)), attrs


def _tracer(
    monkeypatch: pytest.MonkeyPatch, **env: str
) -> tuple[LightTracer, InMemorySpanExporter]:
    provider, exporter = _setup(monkeypatch, **env)
    return LightTracer.of(provider, SCOPE), exporter


def _finished(exporter: InMemorySpanExporter) -> ReadableSpan:
    (span,) = exporter.get_finished_spans()
    return span


def test_values_the_sdk_refuses_are_dropped_and_sequences_become_tuples(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tracer, exporter = _tracer(monkeypatch)
    bad: Any = object()
    span = tracer.start("work", SpanKind.INTERNAL, {"ok": 1, "bad": bad})
    span.set_attribute("none", None)
    span.set_attributes({"reasons": ["stop"], "mixed": [1, bad], "ratio": 0.5, "flag": False})
    span.end()
    attrs = dict(_finished(exporter).attributes or {})
    assert attrs == {"ok": 1, "reasons": ("stop",), "ratio": 0.5, "flag": False}


def test_children_share_the_trace_and_an_ended_span_changes_no_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tracer, exporter = _tracer(monkeypatch)
    root = tracer.start("root", SpanKind.SERVER)
    token = context.attach(trace.set_span_in_context(root))
    try:
        child = tracer.start("child", SpanKind.CLIENT, {"n": 1})
    finally:
        context.detach(token)
    assert isinstance(child, LightSpan)
    child.end()
    child.set_attribute("late", 1)
    child.update_name("renamed")
    child.end()  # a second end hands nothing on
    root.end()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"root", "child"}
    root_ctx, child_span = root.get_span_context(), spans["child"]
    assert child_span.context is not None and child_span.parent is not None
    assert child_span.context.trace_id == root_ctx.trace_id
    assert child_span.parent.span_id == root_ctx.span_id
    assert child_span.context.span_id != root_ctx.span_id
    assert dict(child_span.attributes or {}) == {"n": 1}
    assert child_span.start_time is not None and child_span.end_time is not None
    assert child_span.start_time <= child_span.end_time


def test_status_and_exceptions_as_the_sdk_records_them(monkeypatch: pytest.MonkeyPatch) -> None:
    tracer, exporter = _tracer(monkeypatch, OTEL_SPAN_EVENT_COUNT_LIMIT="1")
    span = tracer.start("work", SpanKind.INTERNAL)
    span.set_status(StatusCode.ERROR, "first")
    span.set_status(Status(StatusCode.UNSET))  # changes nothing
    try:
        raise KeyError("missing")
    except KeyError as exc:
        span.record_exception(exc)
        span.record_exception(exc)  # over the event limit: dropped
    span.set_status(Status(StatusCode.OK))
    span.set_status(StatusCode.ERROR, "after OK")  # OK is final
    span.end()
    done = _finished(exporter)
    assert done.status.status_code is StatusCode.OK
    (event,) = done.events
    assert event.name == "exception"
    attrs = dict(event.attributes or {})
    assert attrs["exception.type"] == "KeyError"
    assert "raise KeyError" in str(attrs["exception.stacktrace"])


def test_spans_wait_for_their_root_but_never_unbounded(monkeypatch: pytest.MonkeyPatch) -> None:
    provider, exporter = _setup(monkeypatch)
    tracing_ = trace_setup.Tracing(provider)
    tracer = tracing_.tracer
    assert isinstance(tracer, LightTracer)
    root = tracer.start("root", SpanKind.SERVER)
    token = context.attach(trace.set_span_in_context(root))
    try:
        tracer.start("child", SpanKind.CLIENT).end()
        # Handed on with the request's end, not before.
        assert exporter.get_finished_spans() == ()
        # A root that never ends holds no more than _MAX_WAITING spans back.
        for _ in range(spans._MAX_WAITING):
            tracer.start("child", SpanKind.CLIENT).end()
        assert len(exporter.get_finished_spans()) == spans._MAX_WAITING + 1
        tracer.start("late", SpanKind.CLIENT).end()
    finally:
        context.detach(token)
    # Shutdown hands on what is left, even without its root.
    tracing_.shutdown()
    assert [s.name for s in exporter.get_finished_spans()][-1] == "late"
    assert "root" not in {s.name for s in exporter.get_finished_spans()}


def test_work_put_off_runs_when_the_request_has_answered(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    provider, exporter = _setup(monkeypatch)
    tracer = trace_setup.Tracing(provider).tracer
    assert isinstance(tracer, LightTracer)
    done: list[str] = []

    def broken() -> None:
        raise RuntimeError("boom")

    root = tracer.start("root", SpanKind.SERVER)
    token = spans.enter(root)
    child = tracer.start("child", SpanKind.CLIENT)
    spans.leave(token)
    assert isinstance(root, LightSpan) and isinstance(child, LightSpan)
    child.later(done.append, "first")
    child.later(broken)
    root.later(done.append, "second")
    child.end()
    assert done == []  # not while the request runs
    root.end()
    # In order; one that fails is logged and loses neither the rest nor the spans.
    assert done == ["first", "second"]
    assert "deferred trace work failed" in caplog.text
    assert {s.name for s in exporter.get_finished_spans()} == {"root", "child"}


def test_a_processor_that_acts_on_start_sees_every_span_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider, exporter = _setup(monkeypatch)
    started: list[int] = []

    class Watching(SimpleSpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            started.append(span.get_span_context().span_id)

    # The SDK's own processors do nothing on start: no call is made for them.
    assert provider.starts == ()
    tracer = LightTracer.of(provider, SCOPE)
    first = tracer.start("before", SpanKind.INTERNAL)
    provider.add_span_processor(Watching(InMemorySpanExporter()))  # added later: still seen
    root = tracer.start("root", SpanKind.SERVER)
    token = spans.enter(root)
    try:
        child = tracer.start("child", SpanKind.CLIENT)
    finally:
        spans.leave(token)
    for span in (child, root, first):
        span.end()
    assert started == [root.get_span_context().span_id, child.get_span_context().span_id]
    assert {s.name for s in exporter.get_finished_spans()} == {"before", "root", "child"}


def test_the_current_span_is_ours_inside_and_the_otel_contexts_outside(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tracer, _ = _tracer(monkeypatch)
    outer = tracer.start("outer", SpanKind.SERVER)
    assert spans.current() is trace.INVALID_SPAN
    otel_token = context.attach(trace.set_span_in_context(outer))
    try:
        assert spans.current() is outer  # nothing of ours current: the OTel context's
        inner = tracer.start("inner", SpanKind.INTERNAL)
        token = spans.enter(inner)
        try:
            assert spans.current() is inner
            assert trace.get_current_span() is outer  # the OTel context is left alone
        finally:
            spans.leave(token)
        assert spans.current() is outer
    finally:
        context.detach(otel_token)


def test_ids_made_ahead_are_each_spans_own_and_its_traceparent_carries_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Span and trace ids come from pools made ahead (``spans._Ids``): every span
    gets its own, its ``traceparent`` carries exactly its ids, and handing the
    spans on tops the pools up again."""
    tracer, exporter = _tracer(monkeypatch)
    pool = tracer._span_ids.ready
    assert len(pool) == spans._SPAN_IDS_AHEAD
    headers: dict[str, str] = {}
    for n in range(3):
        root = tracer.start("root", SpanKind.SERVER)
        token = spans.enter(root)
        child = tracer.child(f"call {n}", SpanKind.CLIENT, {}, True)
        assert child is not None
        with child as span:
            assert isinstance(span, LightSpan)
            headers[f"call {n}"] = span.traceparent()
        spans.leave(token)
        root.end()  # outside an event loop: handed on at once
    finished = exporter.get_finished_spans()
    assert len({s.context.span_id for s in finished if s.context}) == 6
    assert len({s.context.trace_id for s in finished if s.context}) == 3
    for s in finished:
        if s.name in headers:
            assert s.context is not None
            version, trace_hex, span_hex, flags = headers[s.name].split("-")
            assert (version, flags) == ("00", "01")
            assert int(trace_hex, 16) == s.context.trace_id and len(trace_hex) == 32
            assert int(span_hex, 16) == s.context.span_id and len(span_hex) == 16
    assert len(pool) == spans._SPAN_IDS_AHEAD


def test_a_forked_child_does_not_take_the_ids_its_parent_made_ahead(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ids made before a fork would name spans in both processes: the child
    empties its pools and makes its own."""
    tracer, _ = _tracer(monkeypatch)
    ahead = {span_id for span_id, _ in tracer._span_ids.ready}
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one span, its id to the parent, and out
        code = 1
        try:
            os.close(read)
            span = tracer.start("root", SpanKind.SERVER)
            assert isinstance(span, LightSpan)
            os.write(write, str(span.span_id).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        child_id = int(pipe.read())
    assert os.waitpid(pid, 0)[1] == 0
    assert child_id not in ahead
    # The parent's pool is its own still.
    assert tracer._span_ids.ready[0][0] in ahead


def test_a_providers_id_generator_names_every_span(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not the SDK's random one (``OTEL_PYTHON_ID_GENERATOR``, tests/test_tracing.py):
    every trace and span id is the generator's."""

    class Counting(IdGenerator):
        def __init__(self) -> None:
            self.n = 0

        def generate_span_id(self) -> int:
            self.n += 1
            return self.n

        def generate_trace_id(self) -> int:
            return 0xABC

    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    exporter = InMemorySpanExporter()
    provider = Provider(SimpleSpanProcessor(exporter), id_generator=Counting())
    tracer = LightTracer.of(provider, SCOPE)
    for _ in range(2):
        root = tracer.start("root", SpanKind.SERVER)
        token = spans.enter(root)
        for _ in range(3):
            tracer.start("call", SpanKind.CLIENT).end()
        spans.leave(token)
        root.end()
    ids = sorted(s.context.span_id for s in exporter.get_finished_spans() if s.context)
    assert ids == list(range(1, 9))
    assert {s.context.trace_id for s in exporter.get_finished_spans() if s.context} == {0xABC}


async def test_a_requests_spans_are_handed_on_soon_after_it_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not while the next request may be waiting (``LightTracer.hand_on``): a few
    milliseconds after the answer, on the loop; ``force_flush`` at once."""
    provider, exporter = _setup(monkeypatch)
    async with traced(provider) as client:
        (tracer,) = provider.tracers
        assert tracer.hand_on_after_s == spans.HAND_ON_AFTER_S > 0
        tracer.hand_on_after_s = 60.0
        first = await _solve_traced(client)
        assert first.status_code == 200, first.text
        await asyncio.sleep(0.05)
        assert exporter.get_finished_spans() == ()  # its timer is a minute away
        provider.force_flush()
        assert {s.name for s in exporter.get_finished_spans()} >= {"POST /solve"}
        exporter.clear()
        tracer.hand_on_after_s = spans.HAND_ON_AFTER_S
        second = await _solve_traced(client)
        assert second.status_code == 200, second.text
        for _ in range(200):  # no flush: the timer hands them on
            if exporter.get_finished_spans():
                break
            await asyncio.sleep(0.005)
        names = [s.name for s in exporter.get_finished_spans()]
        assert names.count("POST /solve") == 1 and len(names) > 1, names


def _waiting(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[trace_setup.Tracing, LightTracer, InMemorySpanExporter]:
    """An app's tracing whose tracer hands spans on a minute after their root ends."""
    provider, exporter = _setup(monkeypatch)
    tracing_ = trace_setup.Tracing(provider)
    assert isinstance(tracing_.tracer, LightTracer)
    tracing_.tracer.hand_on_after_s = 60.0
    return tracing_, tracing_.tracer, exporter


def test_a_hand_on_left_on_a_closed_loop_holds_nothing_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, tracer, exporter = _waiting(monkeypatch)

    async def request(name: str) -> None:
        root = tracer.start(name, SpanKind.SERVER)
        token = spans.enter(root)
        tracer.start(f"{name} call", SpanKind.CLIENT).end()
        spans.leave(token)
        root.end()

    asyncio.run(request("first"))  # its loop closes with the timer pending
    assert exporter.get_finished_spans() == ()

    async def second() -> None:
        tracer.hand_on_after_s = 0.001
        await request("second")
        await asyncio.sleep(0.05)

    asyncio.run(second())
    names = {s.name for s in exporter.get_finished_spans()}
    assert names == {"first", "first call", "second", "second call"}


async def test_shutdown_hands_on_what_waits_for_its_timer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tracing_, tracer, exporter = _waiting(monkeypatch)
    tracer.start("root", SpanKind.SERVER).end()
    assert exporter.get_finished_spans() == ()
    tracing_.shutdown()
    assert [s.name for s in exporter.get_finished_spans()] == ["root"]
    await asyncio.sleep(0)  # (the timer was cancelled: nothing is handed on twice)
    assert len(exporter.get_finished_spans()) == 1


async def test_the_providers_shutdown_hands_on_what_waits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the SDK's ``atexit`` hook calls, where a process exits without its
    app's shutdown: requests answered in the last few milliseconds still count."""
    provider, exporter = _setup(monkeypatch)
    tracer = LightTracer.of(provider, SCOPE)
    tracer.hand_on_after_s = 60.0
    tracer.start("root", SpanKind.SERVER).end()
    assert exporter.get_finished_spans() == ()
    provider.shutdown()
    assert [s.name for s in exporter.get_finished_spans()] == ["root"]
