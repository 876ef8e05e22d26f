"""Every error status, produced for real, as JSON with no traceback.

Validation errors go to the live service. Solver faults use apps whose
decomposer is the real `vllm serve` (the `openai` decomposer backend) and
whose solver is a refused port, a stalling server or one answering 500.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from service.settings import Settings
from tests.conftest import SOLVER_NAME
from tests.support import FaultServer, live_app


def _assert_error(resp: httpx.Response, status: int, error_type: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = resp.json()
    assert set(body) == {"error"}
    assert body["error"]["type"] == error_type
    assert body["error"]["message"]
    assert "Traceback" not in resp.text
    return body["error"]


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
        ({"question": 42}, "question"),
    ],
)
def test_invalid_solve_is_422(client: httpx.Client, payload: dict[str, Any], needle: str) -> None:
    err = _assert_error(client.post("/solve", json=payload), 422, "invalid_request")
    assert needle in err["message"]


def test_invalid_decompose_is_422(client: httpx.Client) -> None:
    _assert_error(client.post("/decompose", json={"question": ""}), 422, "invalid_request")
    _assert_error(
        client.post("/decompose", json={"question": "Why?", "max_subquestions": 100}),
        422,
        "invalid_request",
    )


def test_malformed_json_is_422(client: httpx.Client) -> None:
    resp = client.post(
        "/solve", content=b'{"question": ', headers={"content-type": "application/json"}
    )
    _assert_error(resp, 422, "invalid_request")


def test_body_over_limit_is_413(client: httpx.Client) -> None:
    big = {"question": "What is 2+2?", "context": "x" * 70_000}
    _assert_error(client.post("/solve", json=big), 413, "payload_too_large")


def test_streamed_body_over_limit_is_413(client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"question": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}'

    resp = client.post("/solve", content=chunks(), headers={"content-type": "application/json"})
    _assert_error(resp, 413, "payload_too_large")


def test_unknown_route_is_json_404(client: httpx.Client) -> None:
    _assert_error(client.get("/nope"), 404, "not_found")
    _assert_error(client.get("/solve"), 405, "method_not_allowed")


# --- solver faults -------------------------------------------------------------------


def _fault_settings(solver_url: str, decomposer_url: str, **solver: Any) -> Settings:
    return Settings(
        decomposer={  # type: ignore[arg-type]
            "backend": "openai",
            "base_url": decomposer_url,
            "served_model_name": SOLVER_NAME,
        },
        solver={"base_url": solver_url, "model": "big-solver", "max_tokens": 8, **solver},  # type: ignore[arg-type]
    )


def _solve(url: str, mode: str) -> httpx.Response:
    return httpx.post(f"{url}/solve", json={"question": "What is 2+2?", "mode": mode}, timeout=120)


def _refused_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Closed again: nothing listens, connections are refused.
    return f"http://127.0.0.1:{port}/v1"


@pytest.mark.parametrize(("mode", "stage"), [("static", "solve"), ("direct", "final")])
def test_solver_refused_is_502(solver_url: str, mode: str, stage: str) -> None:
    settings = _fault_settings(_refused_url(), solver_url)
    # In static mode the decomposer may write no subquestion, and then the
    # first solver call is the final one.
    with live_app(settings) as url:
        resp = _solve(url, mode)
    err = _assert_error(resp, 502, "upstream_error")
    assert "unreachable" in err["message"]
    assert err["stage"] in ({stage, "final"} if mode == "static" else {stage})


def test_solver_500_is_502(solver_url: str) -> None:
    with FaultServer("500") as fault, live_app(_fault_settings(fault.url, solver_url)) as url:
        resp = _solve(url, "direct")
    err = _assert_error(resp, 502, "upstream_error")
    assert "HTTP 500" in err["message"]
    assert err["stage"] == "final"
    assert fault.hits == 3  # the first call and its two retries


def test_solver_bad_json_is_502(solver_url: str) -> None:
    with FaultServer("badjson") as fault, live_app(_fault_settings(fault.url, solver_url)) as url:
        resp = _solve(url, "direct")
    err = _assert_error(resp, 502, "upstream_error")
    assert "invalid JSON" in err["message"]


def test_solver_stall_is_504(solver_url: str) -> None:
    with (
        FaultServer("stall", stall_s=5) as fault,
        live_app(_fault_settings(fault.url, solver_url, read_timeout_s=1.0)) as url,
    ):
        resp = _solve(url, "direct")
    err = _assert_error(resp, 504, "upstream_timeout")
    assert err["stage"] == "final"


def test_decomposer_unreachable_is_502(solver_url: str) -> None:
    settings = _fault_settings(solver_url, _refused_url())
    settings.solver.model = SOLVER_NAME
    with live_app(settings) as url:
        resp = _solve(url, "static")
        direct = _solve(url, "direct")
    err = _assert_error(resp, 502, "upstream_error")
    assert err["stage"] == "decompose"
    # `direct` does not need the decomposer, so it still works.
    assert direct.status_code == 200, direct.text


def test_decomposer_failed_to_load_is_503(tmp_path: Any) -> None:
    settings = Settings(
        decomposer={"model": str(tmp_path / "missing-model")},  # type: ignore[arg-type]
        solver={"base_url": _refused_url(), "model": "x"},  # type: ignore[arg-type]
    )
    with live_app(settings) as url:
        # Loading fails in the background; readiness reports why.
        for _ in range(50):
            ready = httpx.get(f"{url}/readyz")
            if ready.json()["decomposer"]["state"].startswith("failed"):
                break
            time.sleep(0.1)
        assert ready.status_code == 503
        assert "does not exist" in ready.json()["decomposer"]["state"]
        resp = httpx.post(f"{url}/solve", json={"question": "What is 2+2?"})
        assert httpx.get(f"{url}/healthz").status_code == 200
    err = _assert_error(resp, 503, "not_ready")
    assert "does not exist" in err["message"]


def test_overload_is_429_at_once(solver_url: str) -> None:
    """Past the in-flight bound requests are refused at once, never queued."""
    settings = _fault_settings("http://unused/v1", solver_url)
    settings = settings.model_copy(update={"max_in_flight": 2})
    results: list[tuple[int, float, str | None]] = []

    def one(url: str) -> None:
        started = time.monotonic()
        resp = _solve(url, "direct")
        results.append(
            (resp.status_code, time.monotonic() - started, resp.headers.get("retry-after"))
        )

    with FaultServer("slow", stall_s=3) as slow:
        settings.solver.base_url = slow.url
        with live_app(settings) as url:
            threads = [threading.Thread(target=one, args=(url,)) for _ in range(5)]
            for t in threads:
                t.start()
                time.sleep(0.05)
            for t in threads:
                t.join()
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200, 200, 429, 429, 429]
    for status, seconds, retry_after in results:
        if status == 429:
            assert seconds < 1.0
            assert retry_after == "1"
    assert slow.hits == 2
