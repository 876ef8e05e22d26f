"""The final answer streamed as the solver writes it: /solve, the facade, the raw model.

Ordering is checked with a scripted solver that holds the last piece of its
reply until the test has seen the first piece arrive (``trickle``): a delta
that arrives while the solver still holds that piece cannot have waited for
the call to end (had it waited, the read would end in a timeout). No
wall-clock bound anywhere.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, cast

import httpx
import openai
import pytest

from service.core.settings import Settings
from service.embedded.chat import Holdback
from service.pipeline import run_state
from service.pipeline.run_state import AnswerStream
from tests.fakes import FakeDecomposer, FakeEngine, Q, ScriptedSolver, serve, settings_for
from tests.streams import PLAN, events, live, parse, wait_for, without_latency


def _until(stream: Iterator[tuple[str | None, str, float]], name: str) -> tuple[list[str], str]:
    """The event names up to the first ``name`` event, and its data."""
    seen: list[str] = []
    for event, data, _ in stream:
        seen.append(str(event))
        if event == name:
            return seen, data
    raise AssertionError(f"no {name} event; got {seen}")


def test_solve_streams_the_answer_before_the_final_call_ends() -> None:
    # The two subquestions are answered whole, then the final answer trickles.
    solver = ScriptedSolver("ok", "ok", "trickle")
    body = {"question": Q, "mode": "static", "stream": True}
    with (
        live(settings_for(), solver, FakeDecomposer(PLAN)) as url,
        httpx.stream("POST", f"{url}/solve", json=body, timeout=30) as resp,
    ):
        stream = events(resp.iter_lines())
        seen, first = _until(stream, "answer_delta")
        held = not solver.release.is_set()
        solver.release_from_thread()
        rest = [(name, data) for name, data, _ in stream]
    assert held and seen == ["decomposition", "subquestion", "subquestion", "answer_delta"]
    # The final call was asked to stream; the subquestions' calls were not.
    assert [b.get("stream", False) for b in solver.bodies] == [False, False, True]
    deltas = [json.loads(first)["text"]] + [
        json.loads(d)["text"] for n, d in rest if n == "answer_delta"
    ]
    answer = json.loads(dict(rest)["answer"])
    assert "".join(deltas) == answer["answer_text"] == "The answer is 7."
    assert len(deltas) == 4
    assert [n for n, _ in rest if n != "answer_delta"] == ["answer", "usage", "done"]


def test_the_openai_sdk_gets_content_before_the_final_call_ends() -> None:
    solver = ScriptedSolver("trickle")
    with live(settings_for(), solver, FakeDecomposer(PLAN)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        stream = client.chat.completions.create(
            model="divconq-direct",
            messages=[{"role": "user", "content": Q}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = iter(stream)
        role = next(chunks)
        first = next(c for c in chunks if c.choices and c.choices[0].delta.content)
        held = not solver.release.is_set()
        solver.release_from_thread()
        rest = list(chunks)
    assert role.choices[0].delta.role == "assistant"
    assert held
    text = (first.choices[0].delta.content or "") + "".join(
        c.choices[0].delta.content or "" for c in rest if c.choices
    )
    assert text == "The answer is 7."
    assert rest[-1].usage is not None and rest[-1].usage.completion_tokens == 5


def test_a_client_that_leaves_mid_answer_cancels_the_solver_call() -> None:
    solver = ScriptedSolver("trickle")  # never releases: only a cancelled call ends
    body = {"question": Q, "mode": "direct", "stream": True}
    with live(settings_for(), solver, FakeDecomposer()) as url:
        with httpx.stream("POST", f"{url}/solve", json=body, timeout=30) as resp:
            # Held open: a dropped reader would close the connection now.
            stream = events(resp.iter_lines())
            _until(stream, "answer_delta")
            assert solver.open_streams == 1
        # The solver's reply was still being written: the call was cancelled.
        assert wait_for(lambda: solver.open_streams == 0)
        metrics = httpx.get(f"{url}/metrics").text
    assert 'divconq_requests_total{endpoint="solve",mode="direct",status="499"} 1.0' in metrics
    assert "divconq_requests_in_flight 0.0" in metrics


BACKENDS: dict[str, tuple[dict[str, Any], str]] = {
    "openai": ({}, "ok"),
    "anthropic": ({"backend": "anthropic"}, "anthropic"),
    "azure_openai": ({"backend": "azure_openai"}, "ok"),
}


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("mode", ["static", "direct"])
async def test_streamed_and_whole_answers_and_usage_are_the_same(backend: str, mode: str) -> None:
    extra, behaviour = BACKENDS[backend]
    body = {"question": Q, "mode": mode}

    async def run(stream: bool) -> httpx.Response:
        settings = settings_for(solver=extra, cache={"enabled": False})
        async with serve(settings, ScriptedSolver(behaviour), FakeDecomposer(PLAN)) as client:
            return await client.post("/solve", json={**body, "stream": stream})

    whole = (await run(False)).json()
    streamed = parse((await run(True)).text)
    deltas = [d["text"] for n, d in streamed if n == "answer_delta"]
    assert len(deltas) > 1  # written as it came, not at the end
    assert "".join(deltas) == whole["answer_text"]
    data = dict(streamed)
    assert data["answer"]["answer"] == whole["answer"]
    assert without_latency(data["usage"]) == without_latency(whole["usage"])
    assert not whole["usage"]["solver"]["estimated"]


def _pencils() -> FakeEngine:
    """A model that writes 41 where the calculator writes 40."""
    return FakeEngine("5 * 8 = <<5*8=41>>", "40 pencils.")


async def test_the_embedded_solver_streams_what_the_calculator_wrote() -> None:
    # The model writes 41; the calculator makes it 40 before any of it is sent.
    async with serve(Settings(), decomposer=FakeDecomposer(engine=_pencils())) as client:
        whole = (await client.post("/solve", json={"question": Q, "mode": "direct"})).json()
    async with serve(Settings(), decomposer=FakeDecomposer(engine=_pencils())) as client:
        resp = await client.post("/solve", json={"question": Q, "mode": "direct", "stream": True})
    streamed = parse(resp.text)
    deltas = [d["text"] for n, d in streamed if n == "answer_delta"]
    assert "".join(deltas) == whole["answer_text"]
    assert whole["answer_text"] == "5 * 8 = <<5*8=40>>40 pencils."
    assert not any("41" in d for d in deltas) and len(deltas) > 3
    assert without_latency(dict(streamed)["usage"]) == without_latency(whole["usage"])


async def test_text_already_streamed_is_never_retried() -> None:
    # The reply breaks after two pieces: a retry would write them again.
    solver = ScriptedSolver("cutoff", "ok")
    async with serve(settings_for(), solver) as client:
        resp = await client.post("/solve", json={"question": Q, "mode": "direct", "stream": True})
    streamed = parse(resp.text)
    names = [n for n, _ in streamed]
    assert names == ["answer_delta", "answer_delta", "error", "done"]
    assert dict(streamed)["error"]["error"]["type"] == "upstream_error"
    assert solver.hits == 1
    # A whole reply that breaks the same way is retried, as before.
    solver = ScriptedSolver("cutoff", "ok")
    async with serve(settings_for(), solver) as client:
        resp = await client.post("/solve", json={"question": Q, "mode": "direct"})
    assert resp.status_code == 200 and solver.hits == 2


async def test_a_server_that_refuses_to_stream_answers_whole() -> None:
    solver = ScriptedSolver("nostream")
    async with serve(settings_for(), solver) as client:
        body = {"question": Q, "mode": "direct", "stream": True, "cache": False}
        first = parse((await client.post("/solve", json=body)).text)
        second = parse((await client.post("/solve", json=body)).text)
    for streamed in (first, second):
        assert [n for n, _ in streamed] == ["answer_delta", "answer", "usage", "done"]
        assert dict(streamed)["answer_delta"]["text"] == "The answer is 7."
    # Refused once, then asked whole at once.
    assert [b.get("stream", False) for b in solver.bodies] == [True, False, False]


async def test_the_raw_model_streams_as_openai_does() -> None:
    body = {"messages": [{"role": "user", "content": "5*8?"}], "max_tokens": 40}
    async with serve(Settings(), decomposer=FakeDecomposer(engine=_pencils())) as client:
        whole = (await client.post("/v1/chat/completions", json=body)).json()
    async with serve(Settings(), decomposer=FakeDecomposer(engine=_pencils())) as client:
        resp = await client.post(
            "/v1/chat/completions",
            json={**body, "stream": True, "stream_options": {"include_usage": True}},
        )
    assert resp.headers["content-type"].startswith("text/event-stream")
    chunks = [d for _, d in parse(resp.text)]
    assert chunks[-1] == "[DONE]"
    chunks = chunks[:-1]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    pieces = [c["choices"][0]["delta"].get("content", "") for c in chunks[1:] if c["choices"]]
    assert len([p for p in pieces if p]) > 1
    assert "".join(pieces) == whole["choices"][0]["message"]["content"]
    assert whole["choices"][0]["message"]["content"] == "5 * 8 = <<5*8=40>>40 pencils."
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]
    assert all(c["usage"] is None for c in chunks[:-1])


def test_holdback_never_sends_what_the_calculator_may_rewrite() -> None:
    sent: list[str] = []
    holdback = Holdback(sent.append)
    for text in ("5 * 8 =", "5 * 8 = <", "5 * 8 = <<5*8", "5 * 8 = <<5*8=41"):
        holdback.offer(text)
    assert "".join(sent) == "5 * 8 = "  # the annotation being written waits
    holdback.offer("5 * 8 = <<5*8=40>>")  # closed, with the calculator's value
    holdback.offer("5 * 8 = <<5*8=40>>40 pencils <", final=True)
    assert "".join(sent) == "5 * 8 = <<5*8=40>>40 pencils <"
    assert "41" not in "".join(sent)


def test_answer_pieces_add_up_to_the_stripped_answer() -> None:
    class Run:
        def __init__(self) -> None:
            self.pieces: list[str] = []

        def emit(self, name: str, data: Any) -> None:
            assert name == "answer_delta"
            self.pieces.append(data.text)

    run = Run()
    stream = AnswerStream(cast(run_state.Run, run))
    for piece in ("  ", "\nThe", " answer ", " ", "is 7.", " \n"):
        stream.write(piece)
    assert run.pieces == ["The", " answer", "  is 7."]  # trailing blanks wait for text
    stream.finish("The answer  is 7.")
    assert "".join(run.pieces) == "The answer  is 7."
    # Nothing streamed (a cached or whole reply): the answer in one piece.
    run = Run()
    AnswerStream(cast(run_state.Run, run)).finish("The answer is 7.")
    assert run.pieces == ["The answer is 7."]
