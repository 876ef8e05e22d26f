"""`distill evaluate-solver`: the subproblem solver scored alone on gold decompositions.

A scripted OpenAI-compatible solver (httpx2 MockTransport) stands in for the
model, so what is checked is the scoring: which reply counts as a right step,
what history the chained run sends, and the report a user reads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest

from service.distill.solver_eval import evaluate_solver, markdown, step_value
from service.pipeline import prompts

ZOE = {
    "question": "Zoe has 12 stickers. She buys 3 packs of 5 stickers. How many does she have?",
    "answer": "How many stickers did she buy? ** She bought 3 * 5 = <<3*5=15>>15 stickers.\n"
    "How many does she have now? ** She has 12 + 15 = <<12+15=27>>27 stickers.\n#### 27",
}
PEN = {
    "question": "A pen costs $3. How much do 4 pens cost?",
    "answer": "How much do 4 pens cost? ** 4 pens cost 4 * 3 = <<4*3=12>>12 dollars.\n#### 12",
}
# A subquestion asked again later: an ambiguous chain, skipped.
AMBIGUOUS = {
    "question": "Ann has 2 cats and 3 dogs. How many pets?",
    "answer": "How many cats? ** 2 cats.\nHow many dogs? ** 3 dogs.\nHow many cats? ** 2 cats.\n"
    "#### 5",
}
# Each right step, keyed by subquestion.
RIGHT = {
    "How many stickers did she buy?": "She bought 3 * 5 = <<3*5=15>>15 stickers.",
    "How many does she have now?": "She has 12 + 15 = <<12+15=27>>27 stickers.",
    "How much do 4 pens cost?": "4 pens cost 4 * 3 = <<4*3=12>>12 dollars.",
}

Reply = Callable[[str, list[dict[str, str]]], str]


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    gold = tmp_path / "socratic.jsonl"
    gold.write_text("".join(json.dumps(r) + "\n" for r in [ZOE, PEN, AMBIGUOUS]))
    held_out = tmp_path / "held_out.jsonl"
    held_out.write_text(
        "".join(json.dumps({"id": f"socratic-{i}", "question": "..."}) + "\n" for i in range(3))
    )
    return held_out, gold


class ScriptedSolver:
    """Answers each chat by ``reply(subquestion, messages)`` and keeps what it was sent."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.sent: list[dict[str, Any]] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        assert request.url.path == "/v1/chat/completions"
        body = json.loads(request.content)
        self.sent.append({"body": body, "auth": request.headers.get("authorization")})
        sub = body["messages"][-1]["content"].split("Q: ")[-1]
        content = self.reply(sub, body["messages"])
        return httpx2.Response(200, json={"choices": [{"message": {"content": content}}]})


def _final(messages: list[dict[str, str]]) -> str:
    """The answer step: the last number of the last step in the history."""
    last = [m["content"] for m in messages if m["role"] == "assistant"][-1]
    return prompts.distilled_answer_step(re.findall(r"\d+", last)[-1])


def perfect(sub: str, messages: list[dict[str, str]]) -> str:
    return _final(messages) if sub == prompts.FINAL_SUBQUESTION else RIGHT[sub]


async def _run(
    files: tuple[Path, Path], reply: Reply, **kw: Any
) -> tuple[dict[str, Any], list[Any], ScriptedSolver]:
    solver = ScriptedSolver(reply)
    report, results = await evaluate_solver(
        "http://solver",
        *files,
        model="m",
        transport=httpx2.MockTransport(solver),
        **kw,
    )
    return report, results, solver


@pytest.mark.parametrize(
    ("step", "value"),
    [
        ("She bought 3 * 5 = <<3*5=15>>15 stickers.", 15),
        # The annotation's value, not the number the model wrote after it.
        ("She has 12 + 15 = <<12+15=27>>26 stickers.", 27),
        ("Two steps: <<2*3=6>>6 then <<6+1=7>>7.", 7),
        # No annotation: the last number, thousands separators and all.
        ("She pays $1,250.50 in total.", 1250.5),
        ("She has none left.", None),
    ],
)
def test_step_value_reads_the_last_annotation_else_the_last_number(
    step: str, value: float | None
) -> None:
    assert step_value(step) == value


async def test_a_perfect_solver_scores_one_everywhere(files: tuple[Path, Path]) -> None:
    report, results, solver = await _run(files, perfect)
    # The ambiguous problem is skipped; the other two hold 3 steps.
    assert [r.id for r in results] == ["socratic-0", "socratic-1"]
    assert report["problems"] == 2 and report["steps"] == 3
    for key in ["step_accuracy", "every_step_right", "chained_accuracy", "final_from_gold_steps"]:
        assert report[key] == 1.0, key
    assert report["chained_correct"] == 2
    # Each problem: one call per teacher-forced step, the chain's steps plus its
    # answer, and the answer from the gold steps.
    assert report["solver_calls"] == len(solver.sent) == (2 + 3 + 1) + (1 + 2 + 1)
    assert all(s["body"]["temperature"] == 0.0 and s["body"]["model"] == "m" for s in solver.sent)
    assert "| 2 | 3 | 1.0 | 1.0 | 1.0 | 1.0 | 1.0 |" in markdown(report)


async def test_a_wrong_first_step_costs_the_step_and_the_chain(
    files: tuple[Path, Path],
) -> None:
    def reply(sub: str, messages: list[dict[str, str]]) -> str:
        if sub == "How many stickers did she buy?":
            return "She bought 3 + 5 = <<3+5=8>>8 stickers."
        if sub == "How many does she have now?":
            # Right on the gold history; on its own wrong history it carries the error.
            earlier = messages[1]["content"]
            if "<<3+5=8>>" in earlier:
                return "She has 12 + 8 = <<12+8=20>>20 stickers."
        return perfect(sub, messages)

    report, results, _ = await _run(files, reply)
    zoe = results[0]
    assert (zoe.steps, zoe.steps_right, zoe.chained_right) == (2, 1, False)
    assert zoe.chained_answer == "20"
    # What it wrote comes back, to read the errors.
    assert zoe.step_replies[0] == "She bought 3 + 5 = <<3+5=8>>8 stickers."
    assert zoe.chain == [
        "She bought 3 + 5 = <<3+5=8>>8 stickers.",
        "She has 12 + 8 = <<12+8=20>>20 stickers.",
        "The answer is 20.",
    ]
    assert zoe.final_right  # the answer from the gold steps is still right
    assert report["step_accuracy"] == round(2 / 3, 4)
    assert report["every_step_right"] == report["chained_accuracy"] == 0.5
    assert report["independent_steps_bound"] == round(((2 / 3) ** 2 + 2 / 3) / 2, 4)


async def test_chained_steps_see_the_solvers_own_answers_not_the_gold_ones(
    files: tuple[Path, Path],
) -> None:
    own = "She bought 5 * 3 = <<5*3=15>>15 stickers, in her own words."

    def reply(sub: str, messages: list[dict[str, str]]) -> str:
        return own if sub == "How many stickers did she buy?" else perfect(sub, messages)

    _, _, solver = await _run(files, reply, limit=1)
    second = [
        s["body"]["messages"]
        for s in solver.sent
        if s["body"]["messages"][-1]["content"].endswith("How many does she have now?")
    ]
    # One teacher-forced (the gold step before it), one chained (the solver's own).
    assert sorted(m[1]["content"] for m in second) == sorted(
        [RIGHT["How many stickers did she buy?"], own]
    )


async def test_limit_concurrency_and_key_reach_the_solver(files: tuple[Path, Path]) -> None:
    report, results, solver = await _run(files, perfect, limit=1, concurrency=1, api_key="k1")
    assert [r.id for r in results] == ["socratic-0"]
    assert report["problems"] == 1
    assert {s["auth"] for s in solver.sent} == {"Bearer k1"}
    assert {s["body"]["max_tokens"] for s in solver.sent} == {256}


async def test_a_split_without_gold_decompositions_is_an_error(tmp_path: Path) -> None:
    gold = tmp_path / "socratic.jsonl"
    gold.write_text(json.dumps(ZOE) + "\n")
    held_out = tmp_path / "held_out.jsonl"
    held_out.write_text(json.dumps({"id": "train-7", "question": "..."}) + "\n")
    with pytest.raises(ValueError, match=r"no problem of .* has a gold decomposition"):
        await _run((held_out, gold), perfect)


async def test_a_solver_error_is_raised_not_scored_as_wrong(files: tuple[Path, Path]) -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(503, json={"error": {"message": "starting"}})

    with pytest.raises(httpx2.HTTPStatusError):
        await evaluate_solver(
            "http://solver", *files, model="m", transport=httpx2.MockTransport(handler)
        )
