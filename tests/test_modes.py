"""Every /solve mode and /decompose in process: call sequence, prompts, the
adapter rule, parallel waves, and the accounting the response reports."""

from __future__ import annotations

import time

import pytest

from service.core.schemas import StageUsage
from service.pipeline.run_state import BusyClock
from tests.fakes import FakeDecomposer, Q, ScriptedSolver, serve, settings_for, solve

PLAN = (
    "1. How many apples does Tom have?\n"
    "2. How many pears does Ann buy?\n"
    "3. How many fruits do they have in total?"
)
SUBS = [
    "How many apples does Tom have?",
    "How many pears does Ann buy?",
    "How many fruits do they have in total?",
]
PRICED = {"big-solver": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}


def _check_totals(body: dict[str, object]) -> None:
    usage = body["usage"]
    assert isinstance(usage, dict)
    d, s, t = usage["decomposer"], usage["solver"], usage["total"]
    assert t["prompt_tokens"] == d["prompt_tokens"] + s["prompt_tokens"]
    assert t["completion_tokens"] == d["completion_tokens"] + s["completion_tokens"]
    assert t["cost_usd"] == pytest.approx(d["cost_usd"] + s["cost_usd"])


async def test_static_answers_each_subquestion_then_the_problem() -> None:
    decomposer = FakeDecomposer(PLAN)
    solver = ScriptedSolver("ok")
    settings = settings_for(prices=PRICED, parallel_subquestions=False)
    async with serve(settings, solver, decomposer) as client:
        resp = await solve(client, mode="static", max_subquestions=2)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["mode"] == "static" and body["answer"] == "7"
    assert [s["question"] for s in body["subquestions"]] == SUBS[:2]  # the cap
    assert all(s["answer"] == "The answer is 7." for s in body["subquestions"])
    usage = body["usage"]
    assert usage["decomposer"] | {"latency_ms": 0} == {
        "model": "fake-decomposer",
        "calls": 1,
        "prompt_tokens": 50,
        "completion_tokens": 20,
        "latency_ms": 0,
        "cost_usd": 0.0,
        "adapter": "gsm8k-socratic",
        "answered_by": [],
        "estimated": False,
        "cached_calls": 0,
    }
    assert (usage["solver"]["calls"], usage["solver"]["prompt_tokens"]) == (3, 33)
    assert usage["solver"]["cost_usd"] == pytest.approx((33 * 1.0 + 15 * 2.0) / 1e6)
    assert usage["solver"]["answered_by"] == ["default"]
    _check_totals(body)
    # Each later call sees the earlier Q/A; the final one sees them all.
    assert "How many apples" in str(solver.bodies[1]["messages"])
    assert all(s in str(solver.bodies[2]["messages"]) for s in SUBS[:2])
    # The shipped adapter gets the short zero-shot prompt.
    assert decomposer.calls[0]["adapter"] == "gsm8k-socratic"
    assert decomposer.calls[0]["prompt"].startswith("Problem:")


async def test_hinted_calls_the_solver_once() -> None:
    solver = ScriptedSolver("ok")
    async with serve(settings_for(), solver, FakeDecomposer(PLAN)) as client:
        resp = await solve(client, mode="hinted")
    body = resp.json()
    assert [s["question"] for s in body["subquestions"]] == SUBS
    assert all(s["answer"] == "" for s in body["subquestions"])
    assert body["usage"]["solver"]["calls"] == solver.hits == 1
    assert all(s in str(solver.bodies[0]["messages"]) for s in SUBS)


async def test_socratic_alternates_with_the_distilled_question_generator() -> None:
    decomposer = FakeDecomposer(SUBS[0], SUBS[1], "DONE")
    solver = ScriptedSolver("ok")
    async with serve(settings_for(), solver, decomposer) as client:
        resp = await solve(client, mode="socratic")
    body = resp.json()
    assert [s["question"] for s in body["subquestions"]] == SUBS[:2]
    assert body["usage"]["decomposer"]["calls"] == 3
    # The distilled adapter writes socratic next subquestions too.
    assert body["usage"]["decomposer"]["adapter"] == "gsm8k-socratic"
    assert body["usage"]["solver"]["calls"] == 3
    assert [c["adapter"] for c in decomposer.calls] == ["gsm8k-socratic"] * 3
    # Unique engine ids per decomposer call.
    ids = [c["request_id"] for c in decomposer.calls]
    assert len(set(ids)) == 3 and ids[0].endswith("-d1")
    # Its zero-shot prompt: the problem and the Q/A so far, then the next slot.
    first, second = decomposer.calls[0]["prompt"], decomposer.calls[1]["prompt"]
    assert first.startswith("Problem:") and first.endswith("\nQ1:")
    assert f"Q1: {SUBS[0]}\nA1: The answer is 7." in second and second.endswith("\nQ2:")
    _check_totals(body)


async def test_socratic_with_the_base_model_gets_the_few_shot_prompt() -> None:
    decomposer = FakeDecomposer(SUBS[0], "DONE")
    async with serve(settings_for(), ScriptedSolver("ok"), decomposer) as client:
        resp = await solve(client, mode="socratic", decomposer_adapter="none")
    body = resp.json()
    assert body["usage"]["decomposer"]["adapter"] is None
    assert [c["adapter"] for c in decomposer.calls] == [None, None]
    assert "After the last one, write DONE" in decomposer.calls[0]["prompt"]
    assert "The answer is 7." in decomposer.calls[1]["prompt"]


async def test_socratic_stops_at_the_cap() -> None:
    decomposer = FakeDecomposer(*SUBS)
    async with serve(settings_for(), ScriptedSolver("ok"), decomposer) as client:
        resp = await solve(client, mode="socratic", max_subquestions=2)
    assert len(resp.json()["subquestions"]) == 2
    assert len(decomposer.calls) == 2


async def test_direct_never_calls_the_decomposer() -> None:
    decomposer = FakeDecomposer(PLAN)
    async with serve(settings_for(), ScriptedSolver("ok"), decomposer) as client:
        resp = await solve(client, mode="direct", context="Tom is a farmer.")
    body = resp.json()
    assert body["subquestions"] == [] and decomposer.calls == []
    assert body["usage"]["decomposer"]["calls"] == 0
    assert body["usage"]["solver"]["calls"] == 1


@pytest.mark.parametrize("mode", ["static", "hinted", "socratic", "direct"])
async def test_every_mode_carries_question_and_context(mode: str) -> None:
    decomposer = FakeDecomposer(SUBS[0], "DONE") if mode == "socratic" else FakeDecomposer(PLAN)
    solver = ScriptedSolver("ok")
    async with serve(settings_for(), solver, decomposer) as client:
        resp = await solve(client, mode=mode, context="The passage about Tom.")
    assert resp.status_code == 200, resp.text
    assert resp.json()["mode"] == mode
    final = str(solver.bodies[-1]["messages"])
    assert Q in final and "The passage about Tom." in final
    for call in decomposer.calls:
        assert Q in call["prompt"] and "The passage about Tom." in call["prompt"]


async def test_default_mode_comes_from_settings() -> None:
    async with serve(settings_for(default_mode="hinted"), ScriptedSolver()) as client:
        resp = await client.post("/solve", json={"question": Q})
    assert resp.json()["mode"] == "hinted"


async def test_adapter_choice_none_and_default() -> None:
    decomposer = FakeDecomposer(PLAN)
    async with serve(settings_for(), ScriptedSolver(), decomposer) as client:
        base = await solve(client, mode="static", decomposer_adapter="none")
        default = await solve(client, mode="static")
    assert base.json()["usage"]["decomposer"]["adapter"] is None
    assert default.json()["usage"]["decomposer"]["adapter"] == "gsm8k-socratic"
    # The base model gets the few-shot prompt.
    assert not decomposer.calls[0]["prompt"].startswith("Problem:")


async def test_decompose_returns_the_plan_only() -> None:
    decomposer = FakeDecomposer(PLAN + "\n2. How many pears does Ann buy?")
    solver = ScriptedSolver()
    async with serve(settings_for(), solver, decomposer) as client:
        resp = await client.post("/decompose", json={"question": Q, "max_subquestions": 8})
    body = resp.json()
    assert body["subquestions"] == SUBS
    assert body["repeats_dropped"] == 1
    assert body["usage"]["decomposer"]["calls"] == 1
    assert set(body["usage"]) == {"decomposer"}
    assert solver.hits == 0


@pytest.mark.parametrize(("parallel", "max_concurrency", "expected"), [
    (True, 32, 2), (True, 1, 1), (False, 32, 1),
])  # fmt: skip
async def test_independent_subquestions_run_concurrently(
    parallel: bool, max_concurrency: int, expected: int
) -> None:
    solver = ScriptedSolver("slow", delay_s=0.1)
    settings = settings_for(
        parallel_subquestions=parallel, solver={"max_concurrency": max_concurrency}
    )
    async with serve(settings, solver, FakeDecomposer(PLAN)) as client:
        resp = await solve(client, mode="static")
    body = resp.json()
    assert [s["question"] for s in body["subquestions"]] == SUBS
    assert solver.max_active == expected
    usage = body["usage"]["solver"]
    assert usage["calls"] == 4
    # The stage latency is the solver's busy wall time: three rounds of 0.1 s
    # when two calls overlap, four when they cannot.
    # (No upper bound: a loaded CI box stretches every call; overlap is
    # counted once, see test_busy_clock_counts_overlapping_calls_once.)
    rounds = 3 if expected == 2 else 4
    assert usage["latency_ms"] >= rounds * 100
    assert body["latency_ms"] >= body["usage"]["decomposer"]["latency_ms"] + usage["latency_ms"]


def test_busy_clock_counts_overlapping_calls_once(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: now[0])
    usage = StageUsage(model="m")
    clock = BusyClock(usage)
    with clock.running():  # 0.0 .. 0.3
        now[0] = 0.1
        with clock.running():  # 0.1 .. 0.4, overlapping
            now[0] = 0.3
        now[0] = 0.4
    assert usage.latency_ms == pytest.approx(400.0)
    now[0] = 0.5
    with clock.running():  # then 0.5 .. 0.7 alone
        now[0] = 0.7
    assert usage.latency_ms == pytest.approx(400.0 + 200.0)
