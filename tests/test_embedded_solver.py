"""The embedded solver in process: the default profile calls the engine directly.

The engine is faked (``FakeEngine``); what runs is the real backend, the
calculator, the resilience wrapper, the prompt style and the raw /v1 view.
Nothing goes over HTTP: the app's transport knows no host, so a call that
tried would fail.
"""

from __future__ import annotations

import contextlib

import httpx

from service.core.settings import Settings
from service.pipeline import prompts
from tests.fakes import (
    KEY,
    FakeDecomposer,
    FakeEngine,
    Q,
    ScriptedSolver,
    metric,
    serve,
    settings_for,
    solve,
)

PLAN = "1. How many pencils are in the boxes?\n2. How many are left?"
SUBS = ["How many pencils are in the boxes?", "How many are left?"]


def embedded(
    engine: FakeEngine, *plan: str, settings: Settings | None = None
) -> contextlib.AbstractAsyncContextManager[httpx.AsyncClient]:
    """``serve`` on the embedded default solver: ``engine`` behind it and the decomposer
    (writing ``plan``), no remote solver."""
    return serve(settings or Settings(), decomposer=FakeDecomposer(*plan, engine=engine))


async def test_default_solver_calls_the_engine_with_no_key() -> None:
    engine = FakeEngine("He has 3 + 4 = 7 apples. The answer is 7.")
    async with embedded(engine, settings=Settings(api_keys=[KEY])) as client:
        resp = await client.post(
            "/solve",
            json={"question": Q, "mode": "direct"},
            headers={"Authorization": f"Bearer {KEY}"},
        )
        assert await metric(client, "divconq_solver_calls_total", outcome="ok") == 1
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["answer"] == "7"
    # The distilled solver's own format and sampling, no instructions.
    assert engine.messages() == prompts.distilled_direct(Q)
    call = engine.calls[0]
    assert (call["max_tokens"], call["stop"]) == (256, ["\n", ">>"])
    assert call["stop_token_ids"] == [106]
    usage = body["usage"]["solver"]
    assert usage["model"] == "gemma-3-270m" and usage["answered_by"] == ["default"]
    assert (usage["prompt_tokens"], usage["estimated"]) == (FakeEngine.PROMPT_TOKENS, False)


async def test_the_calculator_writes_the_true_value() -> None:
    engine = FakeEngine("He has 5 * 8 = <<5*8=41>>", "40 pencils. The answer is 40.")
    async with embedded(engine) as client:
        resp = await solve(client)
        corrected = await metric(client, "divconq_calculator_calls_total", outcome="corrected")
    assert resp.status_code == 200, resp.text
    assert resp.json()["answer_text"] == "He has 5 * 8 = <<5*8=40>>40 pencils. The answer is 40."
    assert corrected == 1
    # Two engine calls, one reply: ids unique per generation, as vLLM wants.
    assert len({c["request_id"] for c in engine.calls}) == 2


async def test_static_steps_get_unique_generation_ids() -> None:
    engine = FakeEngine("Step. The answer is 7.")
    async with embedded(engine, PLAN) as client:
        resp = await solve(client, mode="static")
    assert resp.status_code == 200, resp.text
    # Two independent subquestions at once, then the final answer.
    assert len(engine.calls) == 3
    assert len({c["request_id"] for c in engine.calls}) == 3
    assert engine.messages(2) == prompts.distilled_final(
        Q, [(s, "Step. The answer is 7.") for s in SUBS]
    )


async def test_hinted_gets_the_distilled_task_not_chat_instructions() -> None:
    engine = FakeEngine("5 * 8 = 40. 40 - 10 = 30. The answer is 30.")
    async with embedded(engine, PLAN) as client:
        resp = await solve(client, mode="hinted")
    assert resp.status_code == 200, resp.text
    sent = engine.messages()
    assert sent == prompts.distilled_hinted(Q, SUBS)
    # What the distilled solver copied word for word when it got the chat prompt.
    assert "The answer is X" not in str(sent)
    assert all(s in sent[-1]["content"] for s in SUBS)


async def test_a_remote_solver_falls_back_to_the_embedded_one() -> None:
    engine = FakeEngine("The answer is 7.")
    remote = ScriptedSolver("500")
    settings = Settings(
        solvers={
            "big": {
                "base_url": "http://big.test/v1",
                "model": "m",
                "max_retries": 0,
                "fallbacks": ["default"],
            }
        },
        default_solver="big",
    )
    async with serve(settings, {"big": remote}, FakeDecomposer(engine=engine)) as client:
        resp = await solve(client)
    assert resp.status_code == 200, resp.text
    assert resp.json()["usage"]["solver"]["answered_by"] == ["default"]
    assert remote.hits == 1 and len(engine.calls) == 1


async def test_not_loaded_engine_is_503() -> None:
    engine = FakeEngine(ready=False)
    async with embedded(engine) as client:
        resp = await solve(client)
        raw = await client.post(
            "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}
        )
    assert resp.status_code == 503, resp.text
    assert raw.status_code == 503 and raw.headers["retry-after"] == "10"
    assert engine.calls == []


async def test_raw_model_is_a_view_over_the_same_replies() -> None:
    engine = FakeEngine("5 * 8 = <<5*8=41>>", "40.")
    async with embedded(engine) as client:
        resp = await client.post(
            "/v1/chat/completions",
            json={
                "messages": [
                    {"role": "developer", "content": "Be brief."},
                    {"role": "user", "content": "5*8?"},
                ],
                "max_tokens": 40,
                "stop": "\n\n",
            },
        )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["model"] == "gemma-3-270m"
    assert body["choices"][0]["message"]["content"] == "5 * 8 = <<5*8=40>>40."
    assert body["usage"]["completion_tokens"] == 6
    # The request's sampling, not the solver profile's; roles Gemma knows.
    assert (engine.calls[0]["max_tokens"], engine.calls[0]["stop"]) == (40, ["\n\n", ">>"])
    assert [m["role"] for m in engine.messages()] == ["system", "user"]


async def test_readyz_tells_each_solvers_effective_sampling() -> None:
    settings = Settings(
        solvers={"big": {"base_url": "http://big.test/v1", "model": "m"}},
    )
    async with embedded(FakeEngine(), settings=settings) as client:
        solvers = (await client.get("/readyz")).json()["solvers"]
    default, big = solvers["default"], solvers["big"]
    assert default["backend"] == "embedded" and default["base_url"] is None
    assert (default["max_tokens"], default["stop"], default["prompts"]) == (
        256,
        ["\n"],
        "distilled",
    )
    assert (big["backend"], big["base_url"]) == ("openai", "http://big.test/v1")
    assert (big["max_tokens"], big["stop"], big["prompts"]) == (256, [], "chat")


async def test_remote_profile_still_gets_chat_prompts() -> None:
    solver = ScriptedSolver("ok")
    async with serve(settings_for(), solver) as client:
        resp = await solve(client, mode="hinted")
    assert resp.status_code == 200, resp.text
    assert solver.bodies[0]["messages"] == prompts.hinted(Q, [])
