"""Every mode end to end over HTTP: the real in-process vLLM decomposer and a
real `vllm serve` solver. Checks the response contract a client relies on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from service.pipeline import prompts
from tests.stacks import SOLVER_MAX_TOKENS, SOLVER_NAME, Stack
from tests.support import wait_until

QUESTION = (
    "Zoe has 12 stickers. She buys 3 packs of 5 stickers and gives 7 stickers to her "
    "brother. How many stickers does Zoe have now?"
)


def _check_stage(stage: dict[str, Any], *, called: bool) -> None:
    assert set(stage) == {
        "model",
        "calls",
        "prompt_tokens",
        "completion_tokens",
        "latency_ms",
        "cost_usd",
        "answered_by",
        "adapter",
        "estimated",
        "cached_calls",
    }
    # Both backends here report their own token counts: nothing is estimated.
    assert stage["estimated"] is False
    # Every request here asks past the response cache: each call really ran.
    assert stage["cached_calls"] == 0
    if called:
        assert stage["calls"] >= 1
        assert stage["prompt_tokens"] > 0
        assert stage["completion_tokens"] > 0
        assert stage["latency_ms"] > 0
    else:
        assert stage == {**stage, "calls": 0, "prompt_tokens": 0, "completion_tokens": 0}
        assert stage["latency_ms"] == 0


def _check_contract(body: dict[str, Any], mode: str) -> None:
    assert set(body) == {
        "id",
        "mode",
        "answer",
        "answer_text",
        "subquestions",
        "usage",
        "latency_ms",
        "cached",
    }
    assert body["cached"] is False
    assert body["mode"] == mode
    assert isinstance(body["answer"], str)
    assert isinstance(body["answer_text"], str)
    usage = body["usage"]
    dec, sol = usage["decomposer"], usage["solver"]
    _check_stage(dec, called=mode != "direct")
    _check_stage(sol, called=True)
    assert sol["model"] == SOLVER_NAME
    assert sol["answered_by"] == ["default"]
    assert dec["answered_by"] == []
    # The shipped distilled adapter decomposes (static and socratic) by default.
    assert dec["adapter"] == (None if mode == "direct" else "gsm8k-socratic")
    assert sol["adapter"] is None
    assert dec["model"] == "gemma-3-270m"
    # Totals are exactly the sums of the stages.
    assert usage["total"] == {
        "prompt_tokens": dec["prompt_tokens"] + sol["prompt_tokens"],
        "completion_tokens": dec["completion_tokens"] + sol["completion_tokens"],
        "cost_usd": pytest.approx(dec["cost_usd"] + sol["cost_usd"]),
    }
    # Prices configured for the test solver (conftest): input $1, output $2 per 1M tokens.
    assert sol["cost_usd"] == pytest.approx(
        (sol["prompt_tokens"] * 1.0 + sol["completion_tokens"] * 2.0) / 1e6
    )
    assert dec["cost_usd"] == 0.0
    # Calls are sequential here, so the request took at least both stages.
    assert body["latency_ms"] >= dec["latency_ms"] + sol["latency_ms"]
    for sub in body["subquestions"]:
        assert set(sub) == {"question", "answer", "latency_ms", "usage"}
        assert sub["question"].strip()


def _solve(client: httpx.Client, mode: str, **extra: Any) -> dict[str, Any]:
    """One computed answer: past the response cache, which other tests here may have filled."""
    resp = client.post("/solve", json={"question": QUESTION, "mode": mode, "cache": False, **extra})
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    assert body["id"] == resp.headers["x-request-id"]
    _check_contract(body, mode)
    return body


def test_static(client: httpx.Client) -> None:
    body = _solve(client, "static")
    subs = body["subquestions"]
    usage = body["usage"]
    assert usage["decomposer"]["calls"] == 1
    # One solver call per subquestion, then the final answer.
    assert usage["solver"]["calls"] == len(subs) + 1
    for sub in subs:
        assert sub["usage"]["completion_tokens"] > 0
        assert sub["latency_ms"] > 0
    assert sum(s["usage"]["prompt_tokens"] for s in subs) < usage["solver"]["prompt_tokens"]
    # Stage latency is wall time (independent subquestions may overlap), so it
    # covers at least the longest call.
    assert max((s["latency_ms"] for s in subs), default=0) <= usage["solver"]["latency_ms"]


def test_static_cap(client: httpx.Client) -> None:
    body = _solve(client, "static", max_subquestions=1)
    assert len(body["subquestions"]) <= 1


def test_hinted_calls_solver_once(client: httpx.Client) -> None:
    body = _solve(client, "hinted")
    assert body["usage"]["decomposer"]["calls"] == 1
    assert body["usage"]["solver"]["calls"] == 1


def test_socratic_alternates(client: httpx.Client) -> None:
    body = _solve(client, "socratic", max_subquestions=3)
    n = len(body["subquestions"])
    assert n <= 3
    # One decomposer call per subquestion, plus the one that said DONE (unless capped).
    assert body["usage"]["decomposer"]["calls"] in (n, n + 1)
    assert body["usage"]["solver"]["calls"] == n + 1
    if n < 3:
        assert body["usage"]["decomposer"]["calls"] == n + 1


def test_direct_never_calls_decomposer(client: httpx.Client) -> None:
    body = _solve(client, "direct")
    assert body["subquestions"] == []
    assert body["usage"]["solver"]["calls"] == 1


def test_default_mode_and_request_id(client: httpx.Client) -> None:
    resp = client.post("/solve", json={"question": QUESTION}, headers={"X-Request-ID": "req-42"})
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-request-id"] == "req-42"
    assert resp.json()["id"] == "req-42"
    assert resp.json()["mode"] == "static"


def test_solver_tokens_are_the_solvers_own(client: httpx.Client, solver_url: str) -> None:
    """`direct` makes exactly one solver call; its counts equal the server's usage."""
    body = _solve(client, "direct")
    upstream = httpx.post(
        f"{solver_url}/chat/completions",
        json={
            "model": SOLVER_NAME,
            "messages": prompts.direct(QUESTION),
            "max_tokens": SOLVER_MAX_TOKENS,
            "temperature": 0.0,
        },
        timeout=120,
    ).json()
    assert body["usage"]["solver"]["prompt_tokens"] == upstream["usage"]["prompt_tokens"]
    assert body["usage"]["solver"]["completion_tokens"] == upstream["usage"]["completion_tokens"]
    assert body["answer_text"] == upstream["choices"][0]["message"]["content"].strip()


def test_decomposer_tokens_come_from_engine(client: httpx.Client, model_dir: Path) -> None:
    from transformers import AutoTokenizer

    resp = client.post(
        "/decompose",
        json={
            "question": QUESTION,
            "max_subquestions": 3,
            "decomposer_adapter": "none",
        },
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {"id", "subquestions", "repeats_dropped", "usage", "latency_ms"}
    assert isinstance(body["repeats_dropped"], int) and body["repeats_dropped"] >= 0
    assert len(body["subquestions"]) <= 3
    assert len({s.lower() for s in body["subquestions"]}) == len(body["subquestions"])
    dec = body["usage"]["decomposer"]
    _check_stage(dec, called=True)
    assert dec["calls"] == 1
    assert body["latency_ms"] >= dec["latency_ms"]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    expected = len(tokenizer(prompts.static_decomposition(QUESTION))["input_ids"])
    assert dec["prompt_tokens"] == expected


def test_context_is_used(client: httpx.Client) -> None:
    resp = client.post(
        "/solve",
        json={
            "question": "How many pets does Ana have?",
            "context": "Ana has 2 cats and 3 dogs.",
            "mode": "direct",
            "cache": False,
        },
    )
    assert resp.status_code == 200, resp.text
    # The context reaches the solver: the prompt is longer than without it.
    without = client.post(
        "/solve",
        json={"question": "How many pets does Ana have?", "mode": "direct", "cache": False},
    ).json()
    assert (
        resp.json()["usage"]["solver"]["prompt_tokens"]
        > without["usage"]["solver"]["prompt_tokens"]
    )


def test_not_ready_while_loading(stack: Stack) -> None:
    assert stack.early_readyz.status_code == 503
    assert stack.early_readyz.json()["status"] == "not_ready"
    assert stack.early_solve.status_code == 503
    assert stack.early_solve.json()["error"]["type"] == "not_ready"
    assert stack.early_solve.headers["retry-after"]


def test_health_ready_docs(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["decomposer"]["state"] == "ready"
    assert ready.json()["solvers"]["default"]["model"] == SOLVER_NAME
    assert ready.json()["saturated"] is False
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {"/solve", "/decompose", "/healthz", "/readyz"} <= set(spec["paths"])


def test_embedded_openai_api(client: httpx.Client) -> None:
    """The service's own /v1 (the default solver) answers in OpenAI's shape."""
    # The embedded model beside the facade's pipeline models.
    assert "gemma-3-270m" in [m["id"] for m in client.get("/v1/models").json()["data"]]
    resp = client.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8},
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["object"] == "chat.completion"
    assert isinstance(body["choices"][0]["message"]["content"], str)
    assert 0 < body["usage"]["completion_tokens"] <= 8
    assert body["usage"]["prompt_tokens"] > 0


@pytest.mark.parametrize("mode", ["static", "hinted", "socratic", "direct"])
def test_every_mode_with_context(client: httpx.Client, mode: str) -> None:
    _solve(client, mode, context="Stickers come in packs of 5.", max_subquestions=2)


TWO_STEP = (
    "Ben earns $15 an hour. He works 6 hours on Monday and 4 hours on Tuesday. "
    "How much does he earn in total?"
)


def test_disconnect_mid_solve_leaves_nothing_running(
    client: httpx.Client, service_url: str, stack: Stack
) -> None:
    """Neither the decomposer engine nor the solver call keeps working for a
    client that has gone.

    The solve is held in progress by the test, not by a slow machine: the
    "stalled" solver profile takes the call and never answers, and the client
    leaves once the service's call has reached it."""
    stalled = stack.stalled
    hits, left_before = stalled.hits, _clients_that_left(client)
    with httpx.stream(
        "POST",
        f"{service_url}/solve",
        json={"question": TWO_STEP, "mode": "static", "solver": "stalled", "stream": True},
        timeout=300,
    ) as resp:
        assert resp.status_code == 200
        wait_until(lambda: stalled.hits > hits, timeout_s=300, what="the stalled solver call")
    # The client has gone while the solver call was unanswered.

    def settled() -> bool:
        ready = client.get("/readyz").json()
        return bool(ready["in_flight"] == 0 and ready["decomposer"]["engine_requests"] == 0)

    wait_until(settled, timeout_s=30, what="the service to drop the request")
    assert _clients_that_left(client) == left_before + 1  # recorded as a 499


def _clients_that_left(client: httpx.Client) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in client.get("/metrics").text.splitlines()
        if line.startswith("divconq_requests_total{") and 'status="499"' in line
    )
