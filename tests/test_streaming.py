"""Streamed /solve (server-sent events) and clients that leave, in the fast tier.

Event order and content in process; arrival times, disconnects and what the
metrics record on a real loopback socket (``tests/streams.py``), with the
fake decomposer and scripted solvers.
"""

from __future__ import annotations

import logging

import httpx
import pytest

from tests.fakes import FakeDecomposer, Q, ScriptedSolver, metric, serve, settings_for
from tests.streams import PLAN, events, live, parse, wait_for, without_latency

SUBS = ["How many apples does Tom have?", "How many pears does Ann buy?"]


@pytest.mark.parametrize("mode", ["static", "hinted", "socratic", "direct"])
async def test_streamed_and_non_streamed_give_the_same_answer_and_accounting(mode: str) -> None:
    texts = (SUBS[0], SUBS[1], "DONE") if mode == "socratic" else (PLAN,)
    body = {"question": Q, "mode": mode}
    async with serve(settings_for(), ScriptedSolver("ok"), FakeDecomposer(*texts)) as client:
        whole = (await client.post("/solve", json=body)).json()
    async with serve(settings_for(), ScriptedSolver("ok"), FakeDecomposer(*texts)) as client:
        resp = await client.post(
            "/solve", json={**body, "stream": True}, headers={"X-Request-ID": "s-1"}
        )
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    stream = parse(resp.text)
    names = [n for n, _ in stream]
    data = dict(stream)  # the last of each name
    progress = {
        "static": ["decomposition", "subquestion", "subquestion"],
        "hinted": ["decomposition"],  # hints are not answered one by one
        "socratic": ["decomposition", "subquestion"] * 2,  # one more subquestion a round
        "direct": [],
    }[mode]
    # The final answer as the solver streamed it, a word at a time (tests/fakes.py).
    assert names == [*progress, *["answer_delta"] * 4, "answer", "usage", "done"]
    deltas = [d["text"] for n, d in stream if n == "answer_delta"]
    assert deltas == ["The", " answer", " is", " 7."]
    assert "".join(deltas) == whole["answer_text"]
    answered = progress.count("subquestion")
    assert data["answer"] == {
        "id": "s-1",
        "mode": mode,
        "answer": whole["answer"],
        "answer_text": whole["answer_text"],
    }
    assert without_latency(data["usage"]) == without_latency(whole["usage"])
    subs = [d for n, d in stream if n == "subquestion"]
    assert [s.pop("index") for s in subs] == list(range(answered))
    if mode != "hinted":
        assert without_latency(subs) == without_latency(whole["subquestions"])
    if mode != "direct":
        assert data["decomposition"]["subquestions"] == SUBS
    assert data["done"]["id"] == "s-1" and data["done"]["latency_ms"] > 0


async def test_a_failure_after_the_stream_began_is_an_error_event_and_counted() -> None:
    async with serve(settings_for(), ScriptedSolver("echo401"), FakeDecomposer(PLAN)) as client:
        resp = await client.post("/solve", json={"question": Q, "mode": "static", "stream": True})
        counted = await metric(client, "divconq_requests_total", endpoint="solve", status="502")
        ok = await metric(client, "divconq_requests_total", endpoint="solve", status="200")
    stream = parse(resp.text)
    assert [n for n, _ in stream] == ["decomposition", "error", "done"]
    error = stream[1][1]["error"]
    assert error["type"] == "upstream_error" and error["stage"] == "solve"
    assert "HTTP 401" in error["message"]
    assert (counted, ok) == (1, 0)


async def test_invalid_stream_request_is_a_plain_422() -> None:
    async with serve(settings_for(), ScriptedSolver("ok")) as client:
        resp = await client.post("/solve", json={"question": " ", "stream": True})
    assert resp.status_code == 422
    assert resp.json()["error"]["type"] == "invalid_request"


def test_decomposition_arrives_before_the_first_solver_call_returns() -> None:
    # The solver answers only when the test lets it: an event that arrives
    # before then cannot have been held back until the solver's first answer
    # (one that were would end the read in a timeout).
    solver = ScriptedSolver("block")
    with (
        live(settings_for(), solver, FakeDecomposer(PLAN)) as url,
        httpx.stream(
            "POST", f"{url}/solve", json={"question": Q, "stream": True}, timeout=30
        ) as resp,
    ):
        stream = events(resp.iter_lines())
        first, _, _ = next(stream)
        answered_before = solver.release.is_set()
        solver.release_from_thread()
        rest = [name for name, _, _ in stream]
    assert (first, answered_before) == ("decomposition", False)
    assert list(dict.fromkeys(rest)) == ["subquestion", "answer_delta", "answer", "usage", "done"]


def _count(url: str, status: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics").text
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "divconq_requests_total" and s.labels["status"] == status
    )


def test_clients_that_leave_cancel_their_work_and_are_499s(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Streamed or not: the solver call is cancelled at once, the slot freed, and the
    request recorded as 499, with no traceback and nothing logged above info."""
    solver = ScriptedSolver("block")  # never answers: only a cancelled call ends
    caplog.set_level(logging.INFO)
    with live(settings_for(), solver, FakeDecomposer(PLAN)) as url:
        with httpx.stream(
            "POST", f"{url}/solve", json={"question": Q, "stream": True}, timeout=30
        ) as resp:
            name, _, _ = next(events(resp.iter_lines()))
            assert name == "decomposition"
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/solve", json={"question": Q, "mode": "direct"}, timeout=0.5)
        assert wait_for(lambda: _count(url, "499") == 2)
        # The solver never answers: its calls ended because they were cancelled.
        assert wait_for(lambda: solver.active == 0)
        assert "divconq_requests_in_flight 0.0" in httpx.get(f"{url}/metrics").text
        assert _count(url, "500") == 0
    access = [r for r in caplog.records if r.name == "divconq.access"]
    assert sorted(getattr(r, "status", 0) for r in access) == [499, 499]
    assert not [r for r in caplog.records if r.levelno > logging.INFO], [
        r.getMessage() for r in caplog.records if r.levelno > logging.INFO
    ]
    assert "Traceback" not in caplog.text and "Exception in ASGI" not in caplog.text
