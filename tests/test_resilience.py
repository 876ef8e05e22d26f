"""Solver resilience against a scripted server on loopback: retries, Retry-After,
deadlines, fallbacks, profiles, other API shapes, parallel solving, auth and
disconnects. Each test checks what the client gets and how many attempts the
server saw."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from service.settings import Settings
from tests.support import FaultServer, live_app

Q = "Tom has 3 apples and buys 4 more. How many apples does he have?"
KEY = "sk-live-test-51d2"


def settings_for(
    solver_url: str, decomposer_url: str = "http://127.0.0.1:9/v1", **extra: Any
) -> Settings:
    solver = {
        "base_url": solver_url,
        "model": "big-solver",
        "api_key": KEY,
        "max_tokens": 8,
        "backoff_base_s": 0.05,
        "backoff_max_s": 0.2,
        "read_timeout_s": 5.0,
        **extra.pop("solver", {}),
    }
    return Settings(
        decomposer={"backend": "openai", "base_url": decomposer_url, "served_model_name": "dec"},  # type: ignore[arg-type]
        solver=solver,  # type: ignore[arg-type]
        **extra,
    )


@contextmanager
def app_with(*script: str, **kw: Any) -> Iterator[tuple[str, FaultServer]]:
    retry_after = kw.pop("retry_after", "0")
    stall_s = kw.pop("stall_s", 5.0)
    with (
        FaultServer(*script, retry_after=retry_after, stall_s=stall_s) as solver,
        live_app(settings_for(solver.url, **kw)) as url,
    ):
        yield url, solver


def solve(url: str, **body: Any) -> httpx.Response:
    return httpx.post(f"{url}/solve", json={"question": Q, "mode": "direct", **body}, timeout=60)


def metric(url: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def error_of(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body: dict[str, Any] = resp.json()
    assert set(body) == {"error"}
    assert KEY not in resp.text
    return body["error"]


# --- retries -------------------------------------------------------------------------


def test_429_retry_after_seconds_is_honoured() -> None:
    with app_with("429", "ok", retry_after="1") as (url, solver):
        started = time.monotonic()
        resp = solve(url)
        elapsed = time.monotonic() - started
        retried = metric(url, "divconq_solver_calls_total", outcome="retried")
        ok = metric(url, "divconq_solver_calls_total", outcome="ok")
    assert resp.status_code == 200, resp.text
    assert solver.hits == 2
    assert elapsed >= 1.0
    assert (retried, ok) == (1, 1)


def test_429_retry_after_http_date_is_honoured() -> None:
    with app_with("429", "ok") as (url, solver):
        solver.retry_after = email.utils.formatdate(time.time() + 3, usegmt=True)
        started = time.monotonic()
        resp = solve(url)
        elapsed = time.monotonic() - started
    assert resp.status_code == 200, resp.text
    assert solver.hits == 2
    assert elapsed >= 1.5  # HTTP dates have one-second resolution


def test_retry_after_past_the_deadline_fails_at_once() -> None:
    with app_with("429", "ok", retry_after="60") as (url, solver):
        started = time.monotonic()
        resp = solve(url, timeout_s=5)
        elapsed = time.monotonic() - started
    err = error_of(resp, 502)
    assert "HTTP 429" in err["message"]
    assert solver.hits == 1
    assert elapsed < 2.0


@pytest.mark.parametrize(
    ("script", "status", "hits"),
    [
        (("500",), 502, 3),  # retried max_retries (2) times, then given up
        (("503", "ok"), 200, 2),
        (("500", "500", "ok"), 200, 3),
        (("reset", "ok"), 200, 2),
        (("reset",), 502, 3),
        (("400",), 502, 1),  # other 4xx: never retried
        (("badjson",), 502, 1),  # malformed JSON: not a transient fault
    ],
)
def test_retry_policy(script: tuple[str, ...], status: int, hits: int) -> None:
    with app_with(*script) as (url, solver):
        resp = solve(url)
    assert resp.status_code == status, resp.text
    assert solver.hits == hits
    if status != 200:
        err = error_of(resp, status)
        assert err["type"] == "upstream_error"
        assert err["stage"] == "final"


def test_stall_past_read_timeout_is_504_after_retries() -> None:
    with app_with("stall", stall_s=3, solver={"read_timeout_s": 0.5}) as (url, solver):
        resp = solve(url)
        timeouts = metric(url, "divconq_solver_calls_total", outcome="timeout")
    err = error_of(resp, 504)
    assert err["type"] == "upstream_timeout"
    assert solver.hits == 3
    assert timeouts == 1


def test_response_without_usage_counts_zero_tokens() -> None:
    with app_with("nousage") as (url, _):
        resp = solve(url)
    assert resp.status_code == 200, resp.text
    usage = resp.json()["usage"]["solver"]
    assert usage["calls"] == 1
    assert usage["prompt_tokens"] == usage["completion_tokens"] == 0
    assert resp.json()["answer"] == "7"


# --- deadlines -----------------------------------------------------------------------


def test_request_deadline_is_504() -> None:
    with app_with("slow", stall_s=4) as (url, _):
        started = time.monotonic()
        resp = solve(url, timeout_s=1)
        elapsed = time.monotonic() - started
        in_flight = metric(url, "divconq_requests_in_flight")
    err = error_of(resp, 504)
    assert "deadline" in err["message"]
    assert elapsed < 2.5
    assert in_flight == 0


def test_deadline_above_the_cap_is_422() -> None:
    with app_with("ok") as (url, solver):
        resp = solve(url, timeout_s=10_000)
    assert error_of(resp, 422)["type"] == "invalid_request"
    assert solver.hits == 0


# --- profiles and fallbacks ------------------------------------------------------------


def test_fallback_answers_when_primary_fails() -> None:
    with FaultServer("500") as primary, FaultServer("ok") as backup:
        settings = settings_for(
            primary.url,
            solver={"fallbacks": ["backup"]},
            solvers={"backup": {"base_url": backup.url, "model": "backup-model", "max_tokens": 8}},
            prices={"backup-model": {"input_per_mtok": 1.0, "output_per_mtok": 1.0}},
        )
        with live_app(settings) as url:
            resp = solve(url)
    assert resp.status_code == 200, resp.text
    usage = resp.json()["usage"]["solver"]
    assert usage["answered_by"] == ["backup"]
    # Priced by the model that answered.
    assert usage["cost_usd"] == pytest.approx((FaultServer.PROMPT_TOKENS + 5) / 1e6)
    assert primary.hits == 3 and backup.hits == 1


def test_request_picks_a_profile_and_unknown_is_422() -> None:
    with FaultServer("ok") as default, FaultServer("ok") as other:
        settings = settings_for(
            default.url, solvers={"other": {"base_url": other.url, "model": "m2"}}
        )
        with live_app(settings) as url:
            picked = solve(url, solver="other")
            unknown = solve(url, solver="nope")
            ready = httpx.get(f"{url}/readyz").json()
    assert picked.status_code == 200, picked.text
    assert picked.json()["usage"]["solver"]["model"] == "m2"
    assert picked.json()["usage"]["solver"]["answered_by"] == ["other"]
    assert (default.hits, other.hits) == (0, 1)
    assert "unknown solver 'nope'" in error_of(unknown, 422)["message"]
    assert set(ready["solvers"]) == {"default", "other"}
    assert ready["solvers"]["default"]["default"] is True


def test_anthropic_messages_api_shape() -> None:
    with app_with("anthropic", solver={"backend": "anthropic", "model": "claude-x"}) as (url, srv):
        resp = solve(url)
    assert resp.status_code == 200, resp.text
    assert srv.paths == ["/v1/messages"]
    body, headers = srv.bodies[0], srv.headers[0]
    assert body["model"] == "claude-x"
    assert body["max_tokens"] == 8
    assert isinstance(body["system"], str) and body["system"]
    assert [m["role"] for m in body["messages"]] == ["user"]  # type: ignore[union-attr]
    assert headers["x-api-key"] == KEY
    assert headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in headers
    usage = resp.json()["usage"]["solver"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (21, 6)
    assert resp.json()["answer"] == "9"


def test_azure_openai_conventions() -> None:
    with FaultServer("ok") as srv:
        base = srv.url.removesuffix("/v1")
        settings = settings_for(
            base,
            solver={
                "backend": "azure_openai",
                "model": "gpt4o-deploy",
                "api_version": "2024-06-01",
            },
        )
        with live_app(settings) as url:
            resp = solve(url)
    assert resp.status_code == 200, resp.text
    assert srv.paths == ["/openai/deployments/gpt4o-deploy/chat/completions?api-version=2024-06-01"]
    assert srv.headers[0]["api-key"] == KEY
    assert "model" not in srv.bodies[0]


# --- parallel solving ------------------------------------------------------------------

PLAN = (
    "plan: How many apples does Tom have?\n"
    "2. How many pears does Ann buy?\n"
    "3. How many fruits do they have in total?"
)


@pytest.mark.parametrize(("parallel", "max_concurrency", "expected"), [
    (True, 32, 2), (True, 1, 1), (False, 32, 1),
])  # fmt: skip
def test_independent_subquestions_run_concurrently(
    parallel: bool, max_concurrency: int, expected: int
) -> None:
    with FaultServer(PLAN) as decomposer, FaultServer("slow", stall_s=1.0) as solver:
        settings = settings_for(
            solver.url,
            decomposer_url=decomposer.url,
            parallel_subquestions=parallel,
            solver={"max_concurrency": max_concurrency},
        )
        with live_app(settings) as url:
            resp = solve(url, mode="static")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert [s["question"] for s in body["subquestions"]] == [
        "How many apples does Tom have?",
        "How many pears does Ann buy?",
        "How many fruits do they have in total?",
    ]
    assert solver.max_active == expected
    usage = body["usage"]
    assert usage["solver"]["calls"] == 4
    # The stage latency is wall time: shorter than the sum of calls when parallel.
    call_sum = sum(s["latency_ms"] for s in body["subquestions"])
    if expected == 2:
        assert usage["solver"]["latency_ms"] < call_sum + 1500
        assert body["latency_ms"] < 3900
    assert body["latency_ms"] >= usage["decomposer"]["latency_ms"] + usage["solver"]["latency_ms"]


# --- auth ------------------------------------------------------------------------------


def test_api_keys_guard_the_api_but_not_probes() -> None:
    with app_with("ok", api_keys=["client-key-1", "client-key-2"]) as (url, _):
        missing = solve(url)
        wrong = httpx.post(
            f"{url}/solve", json={"question": Q}, headers={"Authorization": "Bearer nope"}
        )
        right = httpx.post(
            f"{url}/solve",
            json={"question": Q, "mode": "direct"},
            headers={"Authorization": "Bearer client-key-2"},
            timeout=60,
        )
        decompose = httpx.post(f"{url}/decompose", json={"question": Q})
        open_paths = [
            httpx.get(f"{url}{p}").status_code for p in ("/healthz", "/readyz", "/metrics")
        ]
    for resp in (missing, wrong, decompose):
        err = error_of(resp, 401)
        assert err["type"] == "unauthorized"
        assert resp.headers["www-authenticate"] == "Bearer"
        assert "client-key" not in resp.text
    assert right.status_code == 200, right.text
    assert open_paths == [200, 200, 200]


# --- disconnects -------------------------------------------------------------------------


def test_disconnect_cancels_the_solver_call() -> None:
    """A client that leaves takes its in-flight solver call with it."""
    with app_with("slow", stall_s=5) as (url, solver):
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/solve", json={"question": Q, "mode": "direct"}, timeout=1.0)
        deadline = time.monotonic() + 3
        while metric(url, "divconq_requests_in_flight") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert metric(url, "divconq_requests_in_flight") == 0
        # Long before the solver would have answered (5 s): the call was cancelled.
        assert time.monotonic() < deadline
        assert solver.hits == 1
