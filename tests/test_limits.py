"""Inputs at the documented limits: served, or refused with a 422 naming the limit.

Token windows are counted here with the word counter (``usage_tokenizer:
none``), so a boundary is the same on every machine; the slow tier checks the
real engine's tokenizer (tests/test_embedded_pair.py).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from service.core.settings import Settings
from service.pipeline import prompts
from service.pipeline.token_estimate import TokenEstimator
from tests.fakes import FakeDecomposer, ScriptedSolver, error_of, serve, settings_for

COUNTER = TokenEstimator(None)


def words(n: int) -> str:
    """A question of exactly ``n`` tokens for the word counter ("7 7 7 ...")."""
    return " ".join(["7"] * n)


def counts(message: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", message))


# --- the two requests measured in issue 36 -----------------------------------------------


async def test_a_4000_character_question_is_a_422_with_its_token_count() -> None:
    decomposer = FakeDecomposer("1. What is 7 + 7?")
    solver = ScriptedSolver("ok")
    question = "7 " * 1999  # 3998 characters, inside the 4000-character cap
    async with serve(settings_for(usage_tokenizer="none"), solver, decomposer) as client:
        resp = await client.post("/solve", json={"question": question, "mode": "static"})
    err = error_of(resp, 422, "invalid_request")
    assert err["stage"] == "decompose"
    assert "context window is 2048 tokens" in err["message"], err
    # The distilled decomposer's prompt: the question's 1999 tokens and its frame.
    prompt = await COUNTER.text(prompts.distilled_decomposition(question))
    reserved = Settings().decomposer.max_tokens
    assert f"needs {prompt + reserved}: {prompt} in the prompt and {reserved}" in err["message"]
    assert decomposer.calls == [] and solver.hits == 0  # refused before any model call


async def test_a_15000_character_context_in_direct_mode_is_a_422_before_the_solver() -> None:
    context = "The ledger lists 12 crates. " * 535  # 14980 characters
    # The embedded solver (no base URL): its window is the engine's max_model_len.
    async with serve(Settings(usage_tokenizer="none"), ScriptedSolver("ok")) as client:
        resp = await client.post(
            "/solve", json={"question": "How many crates?", "context": context, "mode": "direct"}
        )
    err = error_of(resp, 422, "invalid_request")
    assert "the solver's context window is 2048 tokens" in err["message"]
    assert "DIVCONQ_DECOMPOSER__MAX_MODEL_LEN" in err["message"]
    needed, prompt, reserved = counts(err["message"].split("needs ")[1])[:3]
    assert needed == prompt + reserved and prompt > 2048 and err["stage"] == "final"


# --- exactly at each window ----------------------------------------------------------------


async def _solver_window_case(tokens_over: int) -> Any:
    """A remote solver whose window is exactly this question's prompt and max_tokens."""
    question = words(300)
    prompt = await COUNTER.chat(prompts.direct(question))
    window = prompt + 8 - tokens_over  # settings_for's solver max_tokens is 8
    settings = settings_for(usage_tokenizer="none", solver={"context_tokens": window})
    solver = ScriptedSolver("ok")
    async with serve(settings, solver) as client:
        resp = await client.post("/solve", json={"question": question, "mode": "direct"})
    return resp, solver, prompt, window


async def test_a_prompt_that_fills_the_solvers_window_exactly_is_served() -> None:
    resp, solver, _, _ = await _solver_window_case(0)
    assert resp.status_code == 200, resp.text
    assert solver.hits == 1


async def test_one_token_past_the_solvers_window_is_a_422() -> None:
    resp, solver, prompt, window = await _solver_window_case(1)
    err = error_of(resp, 422, "invalid_request")
    assert f"context window is {window} tokens (DIVCONQ_SOLVER__CONTEXT_TOKENS)" in err["message"]
    assert f"needs {prompt + 8}: {prompt} in the prompt and 8 reserved" in err["message"]
    assert solver.hits == 0


@pytest.mark.parametrize("over", [0, 1])
async def test_the_decomposers_window_exactly_and_one_past(over: int) -> None:
    question = words(500)
    prompt = await COUNTER.text(prompts.distilled_decomposition(question))
    reserved = Settings().decomposer.max_tokens
    settings = settings_for(
        usage_tokenizer="none", decomposer={"max_model_len": prompt + reserved - over}
    )
    decomposer = FakeDecomposer("none")
    async with serve(settings, ScriptedSolver("ok"), decomposer) as client:
        resp = await client.post("/decompose", json={"question": question})
    if over:
        assert "context window" in error_of(resp, 422, "invalid_request")["message"]
        assert decomposer.calls == []
    else:
        assert resp.status_code == 200, resp.text
        assert len(decomposer.calls) == 1


# --- characters and bytes -------------------------------------------------------------------


async def test_question_and_context_exactly_at_their_character_limits_are_served() -> None:
    s = Settings()
    body = {"question": "x" * s.max_question_chars, "context": "y" * s.max_context_chars}
    async with serve(settings_for(usage_tokenizer="none"), ScriptedSolver("ok")) as client:
        resp = await client.post("/solve", json={**body, "mode": "static"})
        over = await client.post("/solve", json={**body, "question": body["question"] + "x"})
    assert resp.status_code == 200, resp.text
    assert f"the limit is {s.max_question_chars}" in error_of(over, 422)["message"]


async def test_the_longest_spelling_of_the_longest_body_is_read_not_413() -> None:
    """4-byte characters at both character limits, JSON-escaped (12 bytes each): the body
    cap holds it, so the answer names the limit that governs (here the token window)."""
    s = Settings()
    body = {
        "question": "\U0001f600" * s.max_question_chars,
        "context": "\U0001f600" * s.max_context_chars,
        "mode": "socratic",
        "max_subquestions": s.max_subquestions_limit,
        "timeout_s": s.max_request_timeout_s,
        "decomposer_adapter": "gsm8k-socratic",
        "solver": "default",
        "stream": True,
        "cache": False,
    }
    raw = json.dumps(body).encode()  # ensure_ascii: every emoji as \\ud83d\\ude00
    assert len(raw) > 12 * (s.max_question_chars + s.max_context_chars)
    assert len(raw) <= s.max_body_bytes
    async with serve(settings_for(usage_tokenizer="none"), ScriptedSolver("ok")) as client:
        resp = await client.post(
            "/solve", content=raw, headers={"content-type": "application/json"}
        )
    assert "context window" in error_of(resp, 422, "invalid_request")["message"]


def test_a_body_cap_too_small_for_the_character_limits_fails_at_start() -> None:
    with pytest.raises(ValueError, match="DIVCONQ_MAX_BODY_BYTES=65536 cannot hold"):
        Settings(max_body_bytes=65536)
    assert Settings(max_body_bytes=65536, max_context_chars=1000).max_body_bytes == 65536
