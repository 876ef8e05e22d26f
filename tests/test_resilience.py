"""Solver resilience: retries, Retry-After, fallbacks, profiles, other API shapes,
and what is sent upstream. In process against scripted solvers, except the
few faults only a socket shows (a reset connection, a stall past the read
timeout, a client that goes away), which run against a real loopback server.
"""

from __future__ import annotations

import email.utils
import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.core.errors import (
    UpstreamConnectError,
    UpstreamInvalidResponse,
    UpstreamStatusError,
    UpstreamTimeout,
)
from service.core.http_calls import _retry_after
from service.core.settings import Settings
from service.solver.resilient import is_transient
from tests.fakes import (
    KEY,
    Q,
    ScriptedSolver,
    error_of,
    metric,
    serve,
    settings_for,
    solve,
    url_of,
)
from tests.support import FaultServer, live_app, wait_until

# --- retry policy --------------------------------------------------------------------


def test_transient_is_decided_by_type() -> None:
    assert is_transient(UpstreamTimeout("x"))
    assert is_transient(UpstreamConnectError("x"))
    assert all(is_transient(UpstreamStatusError("x", status=s)) for s in (408, 409, 429, 500, 503))
    assert not any(is_transient(UpstreamStatusError("x", status=s)) for s in (400, 401, 404, 422))
    assert not is_transient(UpstreamInvalidResponse("x"))


def test_retry_after_seconds_or_http_date() -> None:
    assert _retry_after("3") == 3.0
    assert _retry_after(None) is None and _retry_after("soon") is None
    in_3s = _retry_after(email.utils.formatdate(time.time() + 3, usegmt=True))
    assert in_3s is not None and 1.5 <= in_3s <= 3.0  # one-second resolution
    assert _retry_after(email.utils.formatdate(time.time() - 60, usegmt=True)) == 0.0


@pytest.mark.parametrize(
    ("script", "status", "hits"),
    [
        (("500",), 502, 3),  # retried max_retries (2) times, then given up
        (("503", "ok"), 200, 2),
        (("500", "500", "ok"), 200, 3),
        (("429", "ok"), 200, 2),
        (("timeout", "ok"), 200, 2),
        (("timeout",), 504, 3),
        (("connect", "ok"), 200, 2),
        (("reset", "ok"), 200, 2),
        (("reset",), 502, 3),
        (("400",), 422, 1),  # the input refused: never retried, the client's 422
        (("echo401",), 502, 1),  # the service's own key refused: its configuration, 502
        (("badjson",), 502, 1),  # malformed JSON: not a transient fault
    ],
)
async def test_retry_policy(script: tuple[str, ...], status: int, hits: int) -> None:
    solver = ScriptedSolver(*script)
    async with serve(settings_for(), solver) as client:
        resp = await solve(client)
    assert resp.status_code == status, resp.text
    assert solver.hits == hits
    if status != 200:
        assert error_of(resp, status)["stage"] == "final"
    if status == 422:
        assert "solver.test returned HTTP 400" in error_of(resp, 422, "invalid_request")["message"]


async def test_429_retry_after_is_honoured_and_counted() -> None:
    solver = ScriptedSolver("429", "ok", retry_after="1")
    async with serve(settings_for(), solver) as client:
        started = time.monotonic()
        resp = await solve(client)
        elapsed = time.monotonic() - started
        retried = await metric(client, "divconq_solver_calls_total", outcome="retried")
        ok = await metric(client, "divconq_solver_calls_total", outcome="ok")
    assert resp.status_code == 200, resp.text
    assert solver.hits == 2
    assert elapsed >= 1.0
    assert (retried, ok) == (1, 1)


async def test_retry_after_past_the_deadline_fails_at_once() -> None:
    solver = ScriptedSolver("429", "ok", retry_after="60")
    async with serve(settings_for(), solver) as client:
        resp = await solve(client, timeout_s=5)
    # A 502 naming the 429, not the deadline's 504: it gave up at once
    # instead of sleeping 60 s into the 5 s deadline.
    assert "HTTP 429" in error_of(resp, 502, "upstream_error")["message"]
    assert solver.hits == 1


def _tokenizer_file(path: Path) -> Path:
    """A word-level tokenizer.json: one token per word or punctuation mark."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(path))
    return path


async def test_response_without_usage_is_estimated_with_a_tokenizer(tmp_path: Path) -> None:
    settings = settings_for(usage_tokenizer=str(_tokenizer_file(tmp_path / "tokenizer.json")))
    solver = ScriptedSolver("nousage", "ok")
    async with serve(settings, solver) as client:
        resp = await solve(client)
        reported = await solve(client)
        counted = await metric(
            client, "divconq_usage_estimated_calls_total", stage="final", model="big-solver"
        )
    usage = resp.json()["usage"]["solver"]
    assert usage["calls"] == 1 and usage["estimated"] is True
    # "The answer is 7." is five tokens; the prompt, its words plus chat formatting.
    assert usage["completion_tokens"] == 5
    words = sum(
        len(m["content"].replace(".", " .").replace("?", " ?").split())
        for m in solver.bodies[0]["messages"]
    )
    assert usage["prompt_tokens"] >= words + 3
    assert resp.json()["usage"]["total"]["prompt_tokens"] == usage["prompt_tokens"]
    assert resp.json()["answer"] == "7"
    assert reported.json()["usage"]["solver"]["estimated"] is False
    assert counted == 1


# --- profiles and fallbacks ------------------------------------------------------------


def _primary_falls_back(**extra: Any) -> Settings:
    """A default solver at primary.test that falls back to backup.test's backup-model."""
    return settings_for(
        "primary",
        solver={"fallbacks": ["backup"]},
        solvers={"backup": {"base_url": url_of("backup"), "model": "backup-model"}},
        **extra,
    )


async def test_fallback_answers_when_primary_fails() -> None:
    primary, backup = ScriptedSolver("500"), ScriptedSolver("ok")
    settings = _primary_falls_back(
        prices={"backup-model": {"input_per_mtok": 1.0, "output_per_mtok": 1.0}}
    )
    async with serve(settings, {"primary": primary, "backup": backup}) as client:
        resp = await solve(client)
    assert resp.status_code == 200, resp.text
    usage = resp.json()["usage"]["solver"]
    assert usage["answered_by"] == ["backup"]
    # Priced by the model that answered.
    assert usage["cost_usd"] == pytest.approx((ScriptedSolver.PROMPT_TOKENS + 5) / 1e6)
    assert primary.hits == 3 and backup.hits == 1


async def test_fallbacks_exhausted_report_the_last_failure() -> None:
    primary, backup = ScriptedSolver("500"), ScriptedSolver("echo401")
    async with serve(_primary_falls_back(), {"primary": primary, "backup": backup}) as client:
        resp = await solve(client)
    err = error_of(resp, 502, "upstream_error")
    assert "backup.test returned HTTP 401" in err["message"] and err["stage"] == "final"


async def test_request_picks_a_profile() -> None:
    default, other = ScriptedSolver("ok"), ScriptedSolver("ok")
    settings = settings_for(solvers={"other": {"base_url": url_of("other"), "model": "m2"}})
    async with serve(settings, {"solver": default, "other": other}) as client:
        picked = await solve(client, solver="other")
        ready = (await client.get("/readyz")).json()
    assert picked.json()["usage"]["solver"]["model"] == "m2"
    assert picked.json()["usage"]["solver"]["answered_by"] == ["other"]
    assert (default.hits, other.hits) == (0, 1)
    assert set(ready["solvers"]) == {"default", "other"}
    assert ready["solvers"]["default"]["default"] is True


# --- what goes upstream ------------------------------------------------------------------


async def test_request_id_and_key_sent_to_the_solver() -> None:
    solver = ScriptedSolver("ok")
    async with serve(settings_for(), solver) as client:
        resp = await client.post(
            "/solve",
            json={"question": Q, "mode": "direct"},
            headers={"X-Request-ID": "hdr-77"},
        )
    assert resp.status_code == 200, resp.text
    assert solver.paths == ["/v1/chat/completions"]
    assert solver.headers[0]["x-request-id"] == "hdr-77"
    assert solver.headers[0]["authorization"] == f"Bearer {KEY}"
    body = solver.bodies[0]
    assert (body["model"], body["max_tokens"], body["temperature"]) == ("big-solver", 8, 0.0)
    assert resp.json()["usage"]["solver"]["prompt_tokens"] == ScriptedSolver.PROMPT_TOKENS


async def test_key_echoed_by_solver_is_redacted(caplog: pytest.LogCaptureFixture) -> None:
    async with serve(settings_for(), ScriptedSolver("echo401")) as client:
        resp = await solve(client)
    err = error_of(resp, 502, "upstream_error")
    assert "HTTP 401" in err["message"] and "***" in err["message"]
    assert KEY not in caplog.text


async def test_anthropic_messages_api_shape() -> None:
    solver = ScriptedSolver("anthropic")
    settings = settings_for(solver={"backend": "anthropic", "model": "claude-x"})
    async with serve(settings, solver) as client:
        resp = await solve(client)
    assert resp.status_code == 200, resp.text
    assert solver.paths == ["/v1/messages"]
    body, headers = solver.bodies[0], solver.headers[0]
    assert body["model"] == "claude-x"
    assert body["max_tokens"] == 8
    assert isinstance(body["system"], str) and body["system"]
    assert [m["role"] for m in body["messages"]] == ["user"]
    assert headers["x-api-key"] == KEY
    assert headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in headers
    usage = resp.json()["usage"]["solver"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (21, 6)
    assert resp.json()["answer"] == "9"


async def test_azure_openai_conventions() -> None:
    solver = ScriptedSolver("ok")
    settings = settings_for(
        solver={
            "base_url": "http://solver.test",
            "backend": "azure_openai",
            "model": "gpt4o-deploy",
            "api_version": "2024-06-01",
        }
    )
    async with serve(settings, solver) as client:
        resp = await solve(client)
    assert resp.status_code == 200, resp.text
    assert solver.paths == [
        "/openai/deployments/gpt4o-deploy/chat/completions?api-version=2024-06-01"
    ]
    assert solver.headers[0]["api-key"] == KEY
    assert "model" not in solver.bodies[0]


# --- what only a socket shows ------------------------------------------------------------


def socket_settings(solver_url: str, **solver: Any) -> Settings:
    return Settings(
        decomposer={"backend": "openai", "base_url": "http://127.0.0.1:9/v1"},
        solver={
            "base_url": solver_url,
            "model": "big-solver",
            "api_key": KEY,
            "max_tokens": 8,
            "backoff_base_s": 0.05,
            "backoff_max_s": 0.2,
            **solver,
        },
    )


@contextmanager
def socket_app(
    *script: str, stall_s: float = 5.0, **solver: Any
) -> Iterator[tuple[str, FaultServer]]:
    with (
        FaultServer(*script, stall_s=stall_s) as server,
        live_app(socket_settings(server.url, **solver)) as url,
    ):
        yield url, server


def socket_solve(url: str, **body: Any) -> httpx.Response:
    return httpx.post(f"{url}/solve", json={"question": Q, "mode": "direct", **body}, timeout=60)


@pytest.mark.parametrize(
    ("script", "status", "hits"), [(("reset", "ok"), 200, 2), (("reset",), 502, 3)]
)
def test_reset_connection_is_retried(script: tuple[str, ...], status: int, hits: int) -> None:
    with socket_app(*script) as (url, server):
        resp = socket_solve(url)
    assert resp.status_code == status, resp.text
    assert server.hits == hits
    if status == 502:
        assert "unreachable" in error_of(resp, 502, "upstream_error")["message"]


def test_stall_past_read_timeout_is_504_after_retries() -> None:
    with socket_app("stall", stall_s=1, read_timeout_s=0.3) as (url, server):
        resp = socket_solve(url)
        timeouts = httpx.get(f"{url}/metrics").text
        # The last attempt can time out before the stalled server has read it.
        wait_until(lambda: server.hits >= 3, timeout_s=10, what="the third attempt")
    err = error_of(resp, 504, "upstream_timeout")
    assert err["stage"] == "final" and "timed out (ReadTimeout)" in err["message"]
    assert server.hits == 3
    assert 'divconq_solver_calls_total{outcome="timeout"} 1.0' in timeouts


def test_disconnect_cancels_the_solver_call() -> None:
    """A client that leaves takes its in-flight solver call with it."""
    # The solver answers after 10 minutes, longer than any test runs: only a
    # cancelled call ends the request while the server still holds it.
    with socket_app("slow", stall_s=600, read_timeout_s=900) as (url, server):
        host, port = url.removeprefix("http://").split(":")
        body = json.dumps({"question": Q, "mode": "direct"}).encode()
        head = "POST /solve HTTP/1.1\r\nHost: divconq\r\ncontent-type: application/json\r\n"
        with socket.create_connection((host, int(port)), timeout=10) as client:
            client.sendall(f"{head}content-length: {len(body)}\r\n\r\n".encode() + body)
            # The client leaves once the solver has the call, not after a fixed wait
            # (on a loaded machine the call may not have started by then).
            wait_until(lambda: server.active == 1, timeout_s=30, what="the solver call")
        wait_until(
            lambda: "divconq_requests_in_flight 0.0" in httpx.get(f"{url}/metrics").text,
            timeout_s=30,
            what="the request to end",
        )
        left = httpx.get(f"{url}/metrics").text
        assert server.hits == 1 and server.active == 1  # not answered, not retried
    gone = [
        line.rsplit(" ", 1)[1]
        for line in left.splitlines()
        if line.startswith("divconq_requests_total{") and 'status="499"' in line
    ]
    assert gone == ["1.0"]  # recorded as a client that left
