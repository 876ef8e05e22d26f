"""Tracing: one span tree per request, the caller's trace continued, nothing by default.

In process: each test gives the app an SDK tracer provider with an in-memory
exporter and reads back the spans its own request made (scripted solvers,
fake decomposer). One test exports over real OTLP/HTTP to a receiver that
decodes the protobuf, one over OTLP/gRPC to a gRPC receiver; another points
the exporter at a closed port.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from service.api.app import create_app
from service.core.completion import ChatCall, Completion, PromptCall
from service.core.model_settings import SolverSettings
from service.core.settings import Settings
from service.observability import client_trace, semconv, trace_setup, tracing
from service.observability.logs import JsonFormatter
from service.observability.metrics import Metrics
from service.observability.spans import Provider
from service.solver.resilient import ResilientSolver
from tests.fakes import (
    FakeDecomposer,
    Q,
    ScriptedSolver,
    error_of,
    metric,
    serve,
    settings_for,
    solve,
    transport,
    url_of,
)
from tests.otlp_receiver import Receiver
from tests.streams import PLAN, parse
from tests.support import refused_start

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
PROTOCOL = "OTEL_EXPORTER_OTLP_PROTOCOL"
OTEL_VARS = (
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_PYTHON_ID_GENERATOR",
    "OTEL_PROPAGATORS",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    semconv.CAPTURE_CONTENT_ENV,
)


@pytest.fixture(autouse=True)
def _no_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Whatever the shell running the tests exports, each test sets its own.
    for name in OTEL_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture(params=["ours", "sdk"])
def provider(request: pytest.FixtureRequest, exporter: InMemorySpanExporter) -> TracerProvider:
    """Every test twice: with what the standard variables build (``Provider``: our
    light spans) and with a plain SDK provider (the SDK's spans): one trace either way."""
    if request.param == "ours":
        return Provider(SimpleSpanProcessor(exporter))
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


# --- reading a trace back ----------------------------------------------------------


def _children(spans: tuple[ReadableSpan, ...], parent: ReadableSpan) -> list[ReadableSpan]:
    kids = [s for s in spans if s.parent is not None and s.parent.span_id == _sid(parent)]
    return sorted(kids, key=lambda s: s.start_time or 0)


def _sid(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def _tid(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.trace_id)


def _one(spans: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def tree(spans: tuple[ReadableSpan, ...]) -> dict[str, Any]:
    """The request's trace as nested {name, kind, stage, children}: one root."""
    roots = [s for s in spans if s.parent is None or not s.parent.is_valid or s.parent.is_remote]
    assert len(roots) == 1, [s.name for s in roots]

    def node(span: ReadableSpan) -> dict[str, Any]:
        out: dict[str, Any] = {"name": span.name, "kind": span.kind}
        attrs = span.attributes or {}
        if semconv.STAGE in attrs:
            out["stage"] = attrs[semconv.STAGE]
        kids = _children(spans, span)
        if kids:
            out["children"] = [node(k) for k in kids]
        return out

    return node(roots[0])


def _attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def plain(*args: Any, **extra: Any) -> Settings:
    """Scripted-solver settings without the response cache (its spans: test_cache_*)."""
    return settings_for(*args, cache={"enabled": False}, **extra)


def traced(
    provider: TracerProvider, *plan: str, solver: ScriptedSolver | None = None, **settings: Any
) -> contextlib.AbstractAsyncContextManager[httpx.AsyncClient]:
    """``serve`` with spans to ``provider``: ``plain(**settings)``, the solver (ok by
    default), the fake decomposer writing ``plan`` (PLAN by default)."""
    decomposer = FakeDecomposer(*(plan or (PLAN,)))
    return serve(
        plain(**settings), solver or ScriptedSolver("ok"), decomposer, tracer_provider=provider
    )


def _chat(stage: str, model: str = "big-solver") -> dict[str, Any]:
    return {"name": f"chat {model}", "kind": SpanKind.CLIENT, "stage": stage}


DECOMPOSE = {
    "name": "text_completion fake-decomposer",
    "kind": SpanKind.INTERNAL,
    "stage": "decompose",
}


def _request(name: str, workflow: str, calls: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": name,
        "kind": SpanKind.SERVER,
        "children": [
            {"name": f"invoke_workflow {workflow}", "kind": SpanKind.INTERNAL, "children": calls}
        ],
    }


# --- the span tree of each mode ----------------------------------------------------

MODE_CALLS = {
    "static": [DECOMPOSE, _chat("solve"), _chat("solve"), _chat("final")],
    "hinted": [DECOMPOSE, _chat("final")],
    "socratic": [DECOMPOSE, _chat("solve"), DECOMPOSE, _chat("solve"), DECOMPOSE, _chat("final")],
    "direct": [_chat("final")],
}


@pytest.mark.parametrize("mode", list(MODE_CALLS))
async def test_span_tree_of_each_mode(
    mode: str, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    texts = [PLAN] if mode != "socratic" else [*PLAN.replace("1. ", "").split("\n2. "), "DONE"]
    async with traced(provider, *texts, parallel_subquestions=False) as client:
        resp = await solve(client, mode=mode)
    assert resp.status_code == 200, resp.text
    spans = exporter.get_finished_spans()
    assert tree(spans) == _request("POST /solve", f"divconq.{mode}", MODE_CALLS[mode])
    # Everything in one trace, and the client is told which.
    assert {_tid(s) for s in spans} == {_tid(spans[0])}
    assert resp.headers["traceresponse"].split("-")[1] == format(_tid(spans[0]), "032x")

    flow = _attrs(_one(spans, f"invoke_workflow divconq.{mode}"))
    assert flow[semconv.GEN_AI_OPERATION] == "invoke_workflow"
    assert flow[semconv.MODE] == mode
    assert flow[semconv.SUBQUESTIONS] == len(resp.json()["subquestions"])
    total = resp.json()["usage"]["total"]
    assert flow[semconv.GEN_AI_INPUT_TOKENS] == total["prompt_tokens"]
    assert flow[semconv.GEN_AI_OUTPUT_TOKENS] == total["completion_tokens"]

    server = _one(spans, "POST /solve")
    assert _attrs(server)["http.response.status_code"] == 200
    assert _attrs(server)["http.route"] == "/solve"
    assert _attrs(server)[semconv.REQUEST_ID] == resp.headers["x-request-id"]


async def test_model_call_spans_carry_the_genai_attributes(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with traced(provider) as client:
        resp = await solve(client, mode="hinted", decomposer_adapter="gsm8k-socratic")
    assert resp.status_code == 200, resp.text
    spans = exporter.get_finished_spans()
    chat = _attrs(_one(spans, "chat big-solver"))
    assert chat == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "big-solver",
        "gen_ai.request.max_tokens": 8,
        "gen_ai.request.temperature": 0.0,
        "gen_ai.response.model": "big-solver",
        "gen_ai.usage.input_tokens": ScriptedSolver.PROMPT_TOKENS,
        "gen_ai.usage.output_tokens": 5,
        "gen_ai.response.finish_reasons": ("stop",),
        "divconq.stage": "final",
        "divconq.solver.profile": "default",
        "server.address": "solver.test",
        "server.port": 80,
    }
    decompose = _one(spans, "text_completion fake-decomposer")
    assert decompose.kind is SpanKind.INTERNAL  # the engine runs in process
    assert _attrs(decompose) == {
        "gen_ai.operation.name": "text_completion",
        "gen_ai.provider.name": "vllm",
        "gen_ai.request.model": "fake-decomposer",
        "gen_ai.response.model": "fake-decomposer",
        "gen_ai.usage.input_tokens": FakeDecomposer.PROMPT_TOKENS,
        "gen_ai.usage.output_tokens": FakeDecomposer.COMPLETION_TOKENS,
        "gen_ai.response.finish_reasons": ("stop",),
        "divconq.stage": "decompose",
        "divconq.decomposer.adapter": "gsm8k-socratic",
    }
    # No prompt or completion text unless content capture is on.
    assert not any(Q in json.dumps(_attrs(s)) for s in spans)


# --- retries, fallbacks, parallel subquestions, streams -------------------------------


async def test_a_retry_and_a_fallback_are_spans_of_their_own(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    # The primary fails twice with retryable errors, then gives up (max_retries=1);
    # the backup answers.
    primary, backup = ScriptedSolver("503", "timeout"), ScriptedSolver("ok")
    settings = plain(
        "primary",
        solver={"fallbacks": ["backup"], "max_retries": 1},
        solvers={"backup": {"base_url": url_of("backup"), "model": "backup-model"}},
    )
    async with serve(
        settings, {"primary": primary, "backup": backup}, tracer_provider=provider
    ) as client:
        resp = await solve(client)
    assert resp.status_code == 200, resp.text
    spans = exporter.get_finished_spans()
    assert tree(spans) == _request(
        "POST /solve",
        "divconq.direct",
        [_chat("final"), _chat("final"), _chat("final", "backup-model")],
    )
    first, retry, fallback = _children(spans, _one(spans, "invoke_workflow divconq.direct"))
    assert first.status.status_code is StatusCode.ERROR
    assert _attrs(first)["error.type"] == "503"
    assert semconv.RESEND_COUNT not in _attrs(first)
    assert retry.status.status_code is StatusCode.ERROR
    assert _attrs(retry)["error.type"] == "timeout"
    assert _attrs(retry)[semconv.RESEND_COUNT] == 1
    assert fallback.status.status_code is StatusCode.UNSET
    assert _attrs(fallback)[semconv.FALLBACK] is True
    assert _attrs(fallback)[semconv.PROFILE] == "backup"
    assert semconv.FALLBACK not in _attrs(first)


async def test_a_failed_request_marks_its_spans_and_names_its_trace(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    # A 401 (the service's key refused): a 502; a 400 would be the client's 422.
    async with serve(plain(), ScriptedSolver("echo401"), tracer_provider=provider) as client:
        resp = await solve(client)
    spans = exporter.get_finished_spans()
    server = _named_by(error_of(resp, 502, "upstream_error"), spans)
    assert _attrs(server)["error.type"] == "502"
    flow = _one(spans, "invoke_workflow divconq.direct")
    assert flow.status.status_code is StatusCode.ERROR
    assert _attrs(flow)["error.type"] == "upstream_error"
    assert _attrs(_one(spans, "chat big-solver"))["error.type"] == "401"


def _named_by(err: dict[str, Any], spans: tuple[ReadableSpan, ...]) -> ReadableSpan:
    """The request's server span: marked an error, and the one the error body names."""
    server = _one(spans, "POST /solve")
    assert err["trace_id"] == format(_tid(server), "032x")
    assert err["span_id"] == format(_sid(server), "016x")
    assert server.status.status_code is StatusCode.ERROR
    return server


class BrokenDecomposer(FakeDecomposer):
    async def complete(self, call: PromptCall) -> Any:
        raise RuntimeError("a bug, not an upstream failure")


async def test_an_unexpected_error_names_its_trace_too(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    app = create_app(
        plain(),
        transport=transport({"solver": ScriptedSolver("ok")}),
        decomposer=BrokenDecomposer(),
        tracer_provider=provider,
    )
    # Starlette re-raises after answering 500: the client must not.
    asgi = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=asgi, base_url="http://divconq.test") as client,
    ):
        resp = await solve(client, mode="static")
    spans = exporter.get_finished_spans()
    _named_by(error_of(resp, 500, "internal_error"), spans)
    decompose = _one(spans, "text_completion fake-decomposer")
    assert _attrs(decompose)["error.type"] == "RuntimeError"
    assert [e.name for e in decompose.events] == ["exception"]  # the traceback, kept


class InProcessModel:
    """A backend that answers in this process, as the embedded solver does."""

    model_name = "gemma-3-270m"

    async def chat(self, call: ChatCall) -> Completion:
        return Completion("40 - 10 = 30", 12, 7)


async def test_in_process_solver_calls_are_internal_spans(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    solver = ResilientSolver(
        "default", InProcessModel(), SolverSettings(backend="embedded"), Metrics()
    )
    with tracing.using(trace_setup.Tracing(provider)):
        await solver.chat(ChatCall([{"role": "user", "content": Q}], "r1"))
    provider.force_flush()  # (ours hands a root's spans on a few ms after it ends)
    (span,) = exporter.get_finished_spans()
    assert span.name == "chat gemma-3-270m"
    assert span.kind is SpanKind.INTERNAL  # no network hop: not a CLIENT span
    assert _attrs(span)["gen_ai.provider.name"] == "vllm"
    assert _attrs(span)["gen_ai.usage.output_tokens"] == 7


async def test_parallel_subquestions_are_overlapping_siblings(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    solver = ScriptedSolver("slow", delay_s=0.05)
    async with traced(provider, solver=solver) as client:
        resp = await solve(client, mode="static")
    assert resp.status_code == 200, resp.text
    assert solver.max_active == 2
    spans = exporter.get_finished_spans()
    calls = _children(spans, _one(spans, "invoke_workflow divconq.static"))
    a, b = (s for s in calls if _attrs(s).get(semconv.STAGE) == "solve")
    assert a.parent == b.parent
    assert a.start_time and b.start_time and a.end_time and b.end_time
    assert b.start_time < a.end_time and a.start_time < b.end_time


async def test_a_streamed_request_has_the_same_tree(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with traced(provider, parallel_subquestions=False) as client:
        resp = await solve(client, mode="static", stream=True)
    assert [e for e, _ in parse(resp.text)][-1] == "done"
    spans = exporter.get_finished_spans()
    assert tree(spans) == _request("POST /solve", "divconq.static", MODE_CALLS["static"])
    server, flow = _one(spans, "POST /solve"), _one(spans, "invoke_workflow divconq.static")
    # The server span lasts until the stream's last event.
    assert server.end_time and flow.end_time and server.end_time >= flow.end_time


async def test_decompose_and_the_openai_facade_have_the_same_tree(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with traced(provider, parallel_subquestions=False) as client:
        decomposed = await client.post("/decompose", json={"question": Q})
        provider.force_flush()  # (ours hands a request's spans on a few ms after it)
        spans = exporter.get_finished_spans()
        assert decomposed.status_code == 200, decomposed.text
        assert tree(spans) == _request("POST /decompose", "divconq.decompose", [DECOMPOSE])
        exporter.clear()
        chat = await client.post(
            "/v1/chat/completions",
            json={"model": "divconq-static", "messages": [{"role": "user", "content": Q}]},
        )
    assert chat.status_code == 200, chat.text
    assert tree(exporter.get_finished_spans()) == _request(
        "POST /v1/chat/completions", "divconq.static", MODE_CALLS["static"]
    )


async def test_cache_lookups_are_spans_and_a_hit_ends_the_workflow(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with serve(settings_for(), ScriptedSolver("ok"), tracer_provider=provider) as client:
        first = await solve(client)
        provider.force_flush()  # (ours hands a request's spans on a few ms after it)
        missed = exporter.get_finished_spans()
        exporter.clear()
        second = await solve(client)
    assert first.status_code == second.status_code == 200, second.text
    lookup = {"kind": SpanKind.INTERNAL}
    assert tree(missed) == _request(
        "POST /solve",
        "divconq.direct",
        [{"name": "cache.get solve", **lookup}, {"name": "cache.get call", **lookup},
         _chat("final")],
    )  # fmt: skip
    hit = exporter.get_finished_spans()
    assert tree(hit) == _request(
        "POST /solve", "divconq.direct", [{"name": "cache.get solve", **lookup}]
    )
    assert _attrs(_one(missed, "invoke_workflow divconq.direct"))[semconv.CACHE] == "miss"
    assert _attrs(_one(hit, "invoke_workflow divconq.direct"))[semconv.CACHE] == "hit"
    assert _attrs(_one(hit, "cache.get solve"))[semconv.CACHE_OUTCOME] == "hit"
    assert _attrs(_one(missed, "cache.get call"))[semconv.CACHE_OUTCOME] == "miss"


async def test_a_disabled_cache_is_not_reported_as_a_miss(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with serve(plain(), ScriptedSolver("ok"), tracer_provider=provider) as client:
        response = await solve(client)
    assert response.status_code == 200, response.text
    spans = exporter.get_finished_spans()
    assert _attrs(_one(spans, "invoke_workflow divconq.direct"))[semconv.CACHE] == "off"
    assert not [s for s in spans if s.name.startswith("cache.")]


# --- context in and out; logs; content; exemplars -------------------------------------


async def _solve_traced(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    """``/solve`` from a caller whose own trace is TRACE_ID (its span PARENT_ID)."""
    return await client.post(
        "/solve",
        json={"question": Q, "mode": "direct", **body},
        headers={"traceparent": TRACEPARENT, "tracestate": "caller=1"},
    )


@pytest.mark.parametrize("raw_list", [True, False], ids=["headers-list", "setitem"])
async def test_the_callers_trace_is_continued_to_the_solver(
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    raw_list: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each solver call carries its own span's ``traceparent`` (once) and the caller's
    ``tracestate``: written straight into httpx2's header list, as on the pinned
    httpx2, or through ``Headers.__setitem__``, as where that list is not there."""
    assert client_trace._RAW_LIST  # the pinned httpx2 keeps the list the hook writes to
    monkeypatch.setattr(client_trace, "_RAW_LIST", raw_list)
    solver = ScriptedSolver("ok")
    async with traced(provider, solver=solver) as client:
        resp = await _solve_traced(client, mode="static")
    assert resp.status_code == 200, resp.text
    spans = exporter.get_finished_spans()
    assert {format(_tid(s), "032x") for s in spans} == {TRACE_ID}
    server = _one(spans, "POST /solve")
    assert server.parent is not None and format(server.parent.span_id, "016x") == PARENT_ID
    # Every solver call carried the trace, with its own span as the parent.
    chats = {format(_sid(s), "016x") for s in spans if s.name == "chat big-solver"}
    sent = [h["traceparent"].split("-") for h in solver.headers]
    assert len(sent) == 3
    assert {trace_id for _, trace_id, _, _ in sent} == {TRACE_ID}
    assert {parent for _, _, parent, _ in sent} == chats
    # The caller's tracestate goes on with it.
    assert {h.get("tracestate") for h in solver.headers} == {"caller=1"}


async def test_the_callers_baggage_goes_on_to_the_solver(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """The default propagators carry W3C baggage too: what the caller sent in goes
    out with every solver call, beside the trace."""
    solver = ScriptedSolver("ok")
    async with traced(provider, solver=solver) as client:
        resp = await client.post(
            "/solve",
            json={"question": Q, "mode": "static"},
            headers={"traceparent": TRACEPARENT, "baggage": "tenant=blue"},
        )
        plain_resp = await client.post("/solve", json={"question": Q, "mode": "direct"})
    assert resp.status_code == 200 and plain_resp.status_code == 200, resp.text
    with_baggage, without = solver.headers[:3], solver.headers[3:]
    assert [h.get("baggage") for h in with_baggage] == ["tenant=blue"] * 3
    assert {h["traceparent"].split("-")[1] for h in with_baggage} == {TRACE_ID}
    # The next request, sent without baggage, carries none.
    assert [h.get("baggage") for h in without] == [None]
    assert without[0]["traceparent"].split("-")[1] != TRACE_ID


async def test_untraced_by_default_nothing_is_sent_or_added() -> None:
    solver = ScriptedSolver("ok")
    async with serve(plain(), solver) as client:
        resp = await _solve_traced(client)
        failed = await solve(client, mode="nonsense")
    assert resp.status_code == 200, resp.text
    assert "traceresponse" not in resp.headers
    assert "traceparent" not in solver.headers[0]
    assert "trace_id" not in error_of(failed, 422)


async def test_log_lines_carry_the_trace(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Keep()
    handler.setFormatter(JsonFormatter())
    access = logging.getLogger("divconq.access")
    access.addHandler(handler)
    level = access.level
    access.setLevel(logging.INFO)
    try:
        async with serve(plain(), ScriptedSolver("ok"), tracer_provider=provider) as client:
            resp = await solve(client)
    finally:
        access.removeHandler(handler)
        access.setLevel(level)
    assert resp.status_code == 200, resp.text
    server = _one(exporter.get_finished_spans(), "POST /solve")
    (line,) = [json.loads(line) for line in lines]
    assert line["trace_id"] == format(_tid(server), "032x")
    assert line["span_id"] == format(_sid(server), "016x")


async def test_content_is_recorded_only_when_the_genai_switch_is_on(
    provider: TracerProvider, exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(semconv.CAPTURE_CONTENT_ENV, "true")
    async with serve(plain(), ScriptedSolver("ok"), tracer_provider=provider) as client:
        resp = await solve(client)
    assert resp.status_code == 200, resp.text
    chat = _attrs(_one(exporter.get_finished_spans(), "chat big-solver"))
    sent = json.loads(chat["gen_ai.input.messages"])
    assert Q in sent[-1]["parts"][0]["content"] and sent[-1]["role"] == "user"
    (answer,) = json.loads(chat["gen_ai.output.messages"])
    assert answer["parts"][0]["content"] == "The answer is 7."


async def test_latency_histograms_carry_the_trace_as_exemplar(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    families = ("divconq_request_duration_seconds", "divconq_stage_duration_seconds")
    async with serve(plain(), ScriptedSolver("ok"), tracer_provider=provider) as client:
        resp = await solve(client)
        assert resp.status_code == 200, resp.text
        trace_id = resp.headers["traceresponse"].split("-")[1]
        # As a scraper sees them: ours are set a few milliseconds after the answer.
        for _ in range(100):
            scraped = await client.get(
                "/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"}
            )
            with_exemplar = [
                family
                for family in families
                for ln in scraped.text.splitlines()
                if ln.startswith(f"{family}_bucket") and f'trace_id="{trace_id}"' in ln
            ]
            if set(with_exemplar) == set(families):
                break
            await asyncio.sleep(0.01)
        classic = await client.get("/metrics")
    assert set(with_exemplar) == set(families), with_exemplar
    assert trace_id == format(_tid(_one(exporter.get_finished_spans(), "POST /solve")), "032x")
    assert scraped.headers["content-type"].startswith("application/openmetrics-text")
    text = scraped.text
    assert text.count("# EOF") == 1 and text.endswith("# EOF\n")
    # The classic text format has no exemplars, and is still the default.
    assert classic.headers["content-type"].startswith("text/plain")
    assert "trace_id" not in classic.text


# --- configuration from the standard variables; real export ---------------------------


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, ["otlp_proto_grpc"]),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", PROTOCOL: "http/protobuf"},
         ["otlp_proto_http"]),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"},
         ["otlp_proto_grpc"]),
        ({"OTEL_TRACES_EXPORTER": "console,otlp_proto_http"}, ["console", "otlp_proto_http"]),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, []),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, []),
    ],
)  # fmt: skip
def test_standard_variables_choose_the_exporter(env: dict[str, str], names: list[str]) -> None:
    assert trace_setup.exporter_names(env) == names


async def test_spans_are_exported_over_otlp_http(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "divconq-under-test")
    async with serve(plain(), ScriptedSolver("ok")) as client:
        resp = await _solve_traced(client)
    # The lifespan's end flushed the batch processor.
    assert resp.status_code == 200, resp.text
    assert receiver.paths == ["/v1/traces"]
    spans = receiver.spans()
    assert set(spans) == {"POST /solve", "invoke_workflow divconq.direct", "chat big-solver"}
    span, service, schema = spans["chat big-solver"]
    assert span.trace_id.hex() == TRACE_ID
    assert span.kind == span.SPAN_KIND_CLIENT
    attrs = {a.key: a.value for a in span.attributes}
    assert attrs["gen_ai.operation.name"].string_value == "chat"
    assert attrs["gen_ai.usage.input_tokens"].int_value == ScriptedSolver.PROMPT_TOKENS
    assert service["service.name"] == "divconq-under-test"
    assert service["service.instance.id"] == trace_setup.instance_id()
    assert schema == semconv.SCHEMA_URL


async def test_the_standard_variable_chooses_the_id_generator(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``OTEL_PYTHON_ID_GENERATOR=xray`` (opentelemetry-sdk-extension-aws), as an SRE
    whose traces go to AWS X-Ray sets it: a new trace's id begins with its start
    time in seconds, and every span, the solver calls' ``traceparent`` and the
    ``traceresponse`` carry it."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv(PROTOCOL, "http/protobuf")
    monkeypatch.setenv("OTEL_PYTHON_ID_GENERATOR", "xray")
    solver = ScriptedSolver("ok")
    started = int(time.time())
    async with serve(plain(), solver) as client:
        resp = await client.post("/solve", json={"question": Q, "mode": "static"})
    ended = int(time.time())
    assert resp.status_code == 200, resp.text
    spans = [
        span
        for req in receiver.requests
        for rs in req.resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    ]
    assert len(spans) == 2 + 1 + len(solver.headers)  # server, workflow, decomposer, calls
    (trace_id,) = {span.trace_id.hex() for span in spans}
    assert started <= int(trace_id[:8], 16) <= ended
    assert len({span.span_id for span in spans}) == len(spans)
    assert {h["traceparent"].split("-")[1] for h in solver.headers} == {trace_id}
    assert resp.headers["traceresponse"].split("-")[1] == trace_id


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {"OTEL_TRACES_EXPORTER": "otlp_proto_htpp"},
            "divconq: OTEL_TRACES_EXPORTER: no trace exporter named 'otlp_proto_htpp' is installed",
        ),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
                "OTEL_PYTHON_ID_GENERATOR": "x-ray",
            },
            "divconq: OTEL_PYTHON_ID_GENERATOR: no id generator named 'x-ray' is installed",
        ),
        (
            {"OTEL_TRACES_EXPORTER": "console", "OTEL_TRACES_SAMPLER": "parentbased_ratio"},
            "divconq: OTEL_TRACES_SAMPLER: no sampler named 'parentbased_ratio' is installed",
        ),
        (
            {
                "OTEL_TRACES_EXPORTER": "console",
                "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": "10%",
            },
            "divconq: OTEL_TRACES_SAMPLER_ARG: '10%' is not a ratio from 0 to 1",
        ),
        (
            {"OTEL_PROPAGATORS": "tracecontext,b3"},  # tracing off: still loaded at import
            "divconq: OTEL_PROPAGATORS: no propagator named 'b3' is installed",
        ),
    ],
    ids=["exporter", "id-generator", "sampler", "sampler-ratio", "propagator"],
)
def test_a_tracing_variable_naming_nothing_installed_is_one_line_at_start(
    env: dict[str, str], line: str
) -> None:
    assert refused_start(env) == line


@pytest.mark.parametrize(
    ("value", "unknown"),
    [
        ("", None),
        ("none", None),
        ("tracecontext, baggage", None),
        ("tracecontext,", ""),
        ("b3", "b3"),
    ],
)
def test_propagator_names_are_checked_as_the_api_loads_them(
    value: str, unknown: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As ``opentelemetry.propagate`` reads ``OTEL_PROPAGATORS``: empty is the defaults,
    ``none`` is none, and every other name (an empty one too) must be installed."""
    monkeypatch.setenv("OTEL_PROPAGATORS", value)
    problem = trace_setup.config_problem()
    if unknown is None:
        assert problem is None
    else:
        assert problem == f"OTEL_PROPAGATORS: no propagator named {unknown!r} is installed"


def test_each_process_is_an_instance_unless_the_resource_variable_names_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    first = trace_setup.resource().attributes["service.instance.id"]
    assert first == trace_setup.resource().attributes["service.instance.id"]  # one process
    assert uuid.UUID(str(first)).version == 4
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.instance.id=replica-7")
    assert trace_setup.resource().attributes["service.instance.id"] == "replica-7"


def test_tracing_variables_are_checked_only_when_tracing_is_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_PYTHON_ID_GENERATOR", "x-ray")
    assert trace_setup.config_problem() is None  # off: nothing to check
    monkeypatch.setenv("OTEL_PROPAGATORS", "tracecontext, baggage")
    assert trace_setup.config_problem() is None
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    assert trace_setup.config_problem() is not None
    monkeypatch.setenv("OTEL_PYTHON_ID_GENERATOR", "xray")
    assert trace_setup.config_problem() is None


def _install_sampler(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A package, as pip would install it, that registers the sampler ``roots_off``: the
    caller decides, and a request without one is sampled only with the argument ``on``."""
    (path / "divconq_test_sampler.py").write_text(
        "from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased\n"
        "def make(arg):\n"
        "    return ParentBased(ALWAYS_ON if arg == 'on' else ALWAYS_OFF)\n"
    )
    info = path / "divconq_test_sampler-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: divconq-test-sampler\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text(
        "[opentelemetry_traces_sampler]\nroots_off = divconq_test_sampler:make\n"
    )
    monkeypatch.syspath_prepend(str(path))


async def test_an_installed_sampler_named_in_the_standard_variable_decides(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``OTEL_TRACES_SAMPLER`` names a sampler another package registers, as the SDK's
    auto-configuration finds it, and ``OTEL_TRACES_SAMPLER_ARG`` reaches it."""
    _install_sampler(tmp_path, monkeypatch)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv(PROTOCOL, "http/protobuf")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "roots_off")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "off")
    assert trace_setup.config_problem() is None
    solver = ScriptedSolver("ok")
    async with serve(plain(), solver) as client:
        alone = await client.post("/solve", json={"question": Q, "mode": "direct"})
        called = await _solve_traced(client)
    assert alone.status_code == called.status_code == 200
    # Without a caller: not sampled (the default sampler would have), yet carried on.
    assert alone.headers["traceresponse"].endswith("-00")
    assert solver.headers[0]["traceparent"].endswith("-00")
    # A sampled caller's request is recorded: only its spans reach the receiver.
    trace_ids = {
        span.trace_id.hex()
        for req in receiver.requests
        for rs in req.resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    }
    assert trace_ids == {TRACE_ID}


class GrpcReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver: keeps each ExportTraceServiceRequest."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []

    def Export(self, request: ExportTraceServiceRequest, context: Any) -> Any:
        self.requests.append(request)
        return ExportTraceServiceResponse()


async def test_spans_are_exported_over_otlp_grpc(monkeypatch: pytest.MonkeyPatch) -> None:
    receiver = GrpcReceiver()
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=2))
    # (the generated gRPC module has no annotations)
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        async with serve(plain(), ScriptedSolver("ok")) as client:
            resp = await _solve_traced(client)
    finally:
        server.stop(grace=None)
    assert resp.status_code == 200, resp.text
    names = {
        span.name: span.trace_id.hex()
        for req in receiver.requests
        for rs in req.resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    }
    assert names == dict.fromkeys(
        ("POST /solve", "invoke_workflow divconq.direct", "chat big-solver"), TRACE_ID
    )


async def test_an_unreachable_trace_endpoint_drops_and_counts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A bound socket that never listens: connections to it are refused.
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    try:
        port = closed.getsockname()[1]
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "0.2")
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "10")
        async with serve(plain(), ScriptedSolver("ok")) as client:
            resp = await solve(client)
            assert resp.status_code == 200, resp.text
            # The spans may go out in one batch or several, each failing after the
            # exporter's own retries (bounded by OTEL_EXPORTER_OTLP_TIMEOUT).
            dropped = 0.0
            for _ in range(600):
                dropped = await metric(
                    client, "divconq_trace_spans_dropped_total", reason="export_failed"
                )
                if dropped >= 3:
                    break
                await asyncio.sleep(0.1)
    finally:
        closed.close()
    assert dropped == 3  # the server, workflow and chat spans
