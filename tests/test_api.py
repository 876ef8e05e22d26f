"""The HTTP API in process: validation, every error status, auth, readiness,
backpressure and what the metrics record. Fake decomposer, scripted solvers."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from service.api.app import SERVER_GC_YOUNG, create_app
from service.core.settings import Settings
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
)

# --- 422 -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        ({"question": ""}, "question"),
        ({"question": "   \n"}, "question"),
        ({}, "question"),
        ({"question": "What is 2+2?", "mode": "telepathy"}, "mode"),
        ({"question": "What is 2+2?", "max_subquestions": 0}, "max_subquestions"),
        ({"question": "What is 2+2?", "max_subquestions": 99}, "max_subquestions"),
        ({"question": "What is 2+2?", "max_subquestions": "many"}, "max_subquestions"),
        ({"question": "What is 2+2?", "modes": "static"}, "unknown field"),
        ({"question": "x" * 4001}, "limit is 4000"),
        ({"question": "What?", "context": "x" * 16001}, "limit is 16000"),
        ({"question": 42}, "question"),
        ({"question": "What?", "timeout_s": 10_000}, "timeout_s must be at most 900"),
        ({"question": "What?", "timeout_s": 0.5}, "timeout_s"),
        ({"question": "What?", "solver": "nope"}, "unknown solver 'nope'"),
        ({"question": "What?", "decomposer_adapter": "nope"}, "unknown decomposer_adapter"),
    ],
)
async def test_invalid_solve_is_422(payload: dict[str, Any], needle: str) -> None:
    solver = ScriptedSolver("ok")
    async with serve(settings_for(), solver) as client:
        resp = await client.post("/solve", json=payload)
    assert needle in error_of(resp, 422, "invalid_request")["message"]
    assert solver.hits == 0


async def test_invalid_decompose_and_malformed_json_are_422() -> None:
    async with serve(settings_for(), ScriptedSolver()) as client:
        empty = await client.post("/decompose", json={"question": ""})
        adapter = await client.post("/decompose", json={"question": Q, "decomposer_adapter": "x"})
        broken = await client.post(
            "/solve", content=b'{"question": ', headers={"content-type": "application/json"}
        )
    error_of(empty, 422, "invalid_request")
    assert "available: none, gsm8k-socratic" in error_of(adapter, 422)["message"]
    error_of(broken, 422, "invalid_request")


# --- 413, 404, 405 ---------------------------------------------------------------------


async def test_body_over_limit_is_413_declared_or_streamed() -> None:
    async def chunks() -> Any:
        yield b'{"question": "'
        for _ in range(300):
            yield b"x" * 1000
        yield b'"}'

    async with serve(settings_for(), ScriptedSolver()) as client:
        declared = await client.post("/solve", json={"question": Q, "context": "x" * 300_000})
        streamed = await client.post(
            "/solve", content=chunks(), headers={"content-type": "application/json"}
        )
        counted = await metric(client, "divconq_requests_total", status="413")
    error_of(declared, 413, "payload_too_large")
    error_of(streamed, 413, "payload_too_large")
    assert counted == 2


async def test_unknown_route_and_method_are_json() -> None:
    async with serve(settings_for(), ScriptedSolver()) as client:
        error_of(await client.get("/nope"), 404, "not_found")
        error_of(await client.get("/solve"), 405, "method_not_allowed")


# --- 401 -------------------------------------------------------------------------------


async def test_api_keys_guard_the_api_but_not_probes() -> None:
    settings = settings_for(api_keys=["client-key-1", "client-key-2"])
    async with serve(settings, ScriptedSolver("ok")) as client:
        missing = await solve(client)
        wrong = await client.post(
            "/solve", json={"question": Q}, headers={"Authorization": "Bearer nope"}
        )
        right = await client.post(
            "/solve",
            json={"question": Q, "mode": "direct"},
            headers={"Authorization": "Bearer client-key-2"},
        )
        decompose = await client.post("/decompose", json={"question": Q})
        models = await client.get("/v1/models")
        open_paths = [
            (await client.get(p)).status_code for p in ("/healthz", "/readyz", "/metrics")
        ]
    for resp in (missing, wrong, decompose, models):
        error_of(resp, 401, "unauthorized")
        assert resp.headers["www-authenticate"] == "Bearer"
        assert "client-key" not in resp.text
    assert right.status_code == 200, right.text
    assert open_paths == [200, 200, 200]


# --- 429 -------------------------------------------------------------------------------


async def test_overload_is_429_at_once_and_counted() -> None:
    """Past the in-flight bound requests are refused at once, never queued."""
    solver = ScriptedSolver("block")
    async with serve(settings_for(max_in_flight=2), solver) as client:
        held = [asyncio.create_task(solve(client)) for _ in range(2)]
        await solver.until_hits(2)
        # Answered while both slots are still held by requests the solver
        # blocks: a queued request would wait for a release that never comes
        # (the guard turns that hang into a failure).
        refused = await asyncio.wait_for(
            asyncio.gather(*(solve(client) for _ in range(3))), timeout=60
        )
        still_held = [not task.done() for task in held]
        ready = (await client.get("/readyz")).json()
        solver.release.set()
        done = await asyncio.gather(*held)
        counted = await metric(client, "divconq_requests_total", status="429")
        in_flight = await metric(client, "divconq_requests_in_flight")
    assert [r.status_code for r in done] == [200, 200]
    for resp in refused:
        assert error_of(resp, 429, "overloaded")
        assert resp.headers["retry-after"] == "1"
    assert still_held == [True, True]
    assert (ready["in_flight"], ready["saturated"]) == (2, True)
    assert solver.hits == 2
    assert counted == 3 and in_flight == 0


# --- 503 -------------------------------------------------------------------------------


async def test_not_ready_is_503_except_where_the_decomposer_is_not_needed() -> None:
    loading = FakeDecomposer(ready=False)
    async with serve(settings_for(), ScriptedSolver("ok"), loading) as client:
        static = await solve(client, mode="static")
        decompose = await client.post("/decompose", json={"question": Q})
        direct = await solve(client, mode="direct")
        ready = await client.get("/readyz")
        health = await client.get("/healthz")
    for resp in (static, decompose):
        assert "decomposer not ready" in error_of(resp, 503, "not_ready")["message"]
        assert resp.headers["retry-after"] == "10"
    assert direct.status_code == 200, direct.text  # a remote solver alone
    assert ready.status_code == 503 and ready.json()["status"] == "not_ready"
    assert health.status_code == 200


async def test_embedded_solver_needs_the_engine_even_for_direct() -> None:
    settings = Settings()  # the embedded model is the solver too
    async with serve(settings, {}, FakeDecomposer(ready=False)) as client:
        direct = await solve(client, mode="direct")
        raw = await client.post(
            "/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}]}
        )
        models = await client.get("/v1/models")
    error_of(direct, 503, "not_ready")
    error_of(raw, 503, "not_ready")
    # Listed while it loads: the pipeline models and the embedded one.
    assert [m["id"] for m in models.json()["data"]][-1] == "gemma-3-270m"


async def test_decomposer_failed_to_load_is_503(tmp_path: Any) -> None:
    """The real vLLM backend, failing before it imports vLLM: a missing model dir."""
    settings = settings_for(decomposer={"model": str(tmp_path / "missing-model")})
    async with serve(settings, ScriptedSolver(), fake_decomposer=False) as client:
        for _ in range(200):
            ready = await client.get("/readyz")
            if ready.json()["decomposer"]["state"].startswith("failed"):
                break
            await asyncio.sleep(0.01)
        resp = await solve(client, mode="static")
    assert ready.status_code == 503
    assert "does not exist" in ready.json()["decomposer"]["state"]
    assert "does not exist" in error_of(resp, 503, "not_ready")["message"]


# --- 502, 504 --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "status", "error_type", "needle"),
    [
        ("connect", 502, "upstream_error", "solver at http://solver.test unreachable"),
        ("500", 502, "upstream_error", "returned HTTP 500"),
        ("badjson", 502, "upstream_error", "invalid JSON"),
        ("timeout", 504, "upstream_timeout", "timed out (ReadTimeout)"),
    ],
)
async def test_solver_failures_map_to_status_and_stage(
    script: str, status: int, error_type: str, needle: str
) -> None:
    async with serve(settings_for(), ScriptedSolver(script)) as client:
        static = await solve(client, mode="static")  # the fake writes no subquestion
        direct = await solve(client, mode="direct")
    for resp in (static, direct):
        err = error_of(resp, status, error_type)
        assert needle in err["message"]
        assert err["stage"] == "final"
        assert err["message"].endswith("during 'final'")


async def test_failure_in_a_subquestion_names_the_solve_stage() -> None:
    decomposer = FakeDecomposer("1. How many apples does Tom have?")
    async with serve(settings_for(), ScriptedSolver("500"), decomposer) as client:
        resp = await solve(client, mode="static")
    assert error_of(resp, 502, "upstream_error")["stage"] == "solve"


async def test_http_decomposer_unreachable_is_502_and_direct_still_works() -> None:
    settings = settings_for(
        decomposer={"backend": "openai", "base_url": "http://decomposer.test/v1"}
    )
    async with serve(settings, ScriptedSolver("ok"), fake_decomposer=False) as client:
        static = await solve(client, mode="static")
        direct = await solve(client, mode="direct")
    err = error_of(static, 502, "upstream_error")
    assert err["stage"] == "decompose"
    assert err["message"].startswith("decomposer at http://decomposer.test unreachable")
    assert direct.status_code == 200, direct.text


async def test_request_deadline_is_504_and_frees_the_slot() -> None:
    # The solver never answers on its own: only the deadline can end the request.
    solver = ScriptedSolver("block")
    async with serve(settings_for(), solver) as client:
        resp = await solve(client, timeout_s=1)
        answered_while_blocked = not solver.release.is_set() and solver.active == 0
        in_flight = await metric(client, "divconq_requests_in_flight")
        counted = await metric(client, "divconq_requests_total", status="504", mode="direct")
        solver.release.set()
    assert "deadline of 1 s" in error_of(resp, 504, "upstream_timeout")["message"]
    assert answered_while_blocked  # the solver call was cancelled, not waited out
    assert in_flight == 0 and counted == 1


# --- probes, ids, metrics --------------------------------------------------------------


async def test_health_ready_and_request_id() -> None:
    async with serve(settings_for(), ScriptedSolver("ok")) as client:
        ready = (await client.get("/readyz")).json()
        given = await client.post(
            "/solve", json={"question": Q, "mode": "direct"}, headers={"X-Request-ID": "abc-1"}
        )
        made = await solve(client)
    assert ready["status"] == "ready"
    assert ready["decomposer"]["adapters"] == ["gsm8k-socratic"]
    assert ready["decomposer"]["default_adapter"] == "gsm8k-socratic"
    assert ready["solvers"]["default"]["model"] == "big-solver"
    assert given.headers["x-request-id"] == "abc-1" == given.json()["id"]
    assert len(made.headers["x-request-id"]) == 32


async def test_a_served_app_tunes_the_collector_and_a_test_app_does_not() -> None:
    """``divconq serve`` (``server_gc``) leaves what startup made out of every later
    garbage collection and raises the young generation's threshold once the
    decomposer is up; an app made in a test process (many apps, one process)
    changes neither."""
    gc.unfreeze()
    threshold = gc.get_threshold()
    try:
        for server_gc in (False, True):
            app = create_app(
                settings_for(),
                transport=transport({}),
                decomposer=FakeDecomposer(),
                server_gc=server_gc,
            )
            async with app.router.lifespan_context(app):
                for _ in range(5):  # the decomposer's start task and its callbacks
                    await asyncio.sleep(0)
                frozen, young = gc.get_freeze_count(), gc.get_threshold()[0]
            assert (frozen > 0) is server_gc, frozen
            assert young == (SERVER_GC_YOUNG if server_gc else threshold[0]), young
            assert gc.get_threshold()[1:] == threshold[1:]
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


async def test_solver_calls_are_counted_by_outcome() -> None:
    # The cache off: the same question goes to the solver twice.
    settings = settings_for(cache={"enabled": False})
    async with serve(settings, ScriptedSolver("503", "ok", "400")) as client:
        await solve(client)
        await solve(client)
        outcomes = {
            o: await metric(client, "divconq_solver_calls_total", outcome=o)
            for o in ("ok", "retried", "http_error")
        }
        requests = await metric(
            client, "divconq_requests_total", endpoint="solve", mode="direct", status="422"
        )
    assert outcomes == {"ok": 1, "retried": 1, "http_error": 1}
    assert requests == 1
