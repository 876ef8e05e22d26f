"""The embedded default does the whole job: the distilled Socratic pair, real engine.

The service runs with nothing configured: the distilled decomposer (static
and socratic question generator) in process, the distilled subproblem solver
at its own /v1 with the calculator in the loop. Greedy decoding is
deterministic, so the README's example problems must come out right, in
whichever dtype this CPU runs (bf16 or float32: greedy choices can differ
between them, so the README's examples are ones checked right in both).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from tests.support import service_cli

README = Path(__file__).resolve().parents[1] / "README.md"

# The README's example problems and their answers (README, "Try it").
EXAMPLES = [
    (
        "Sam has 5 boxes with 8 pencils in each box. He gives away 10 pencils. "
        "How many pencils does he have left?",
        "30",
    ),
    ("Lily reads 10 pages a day. How many pages does she read in 7 days?", "70"),
]


def test_examples_are_the_readmes() -> None:
    text = README.read_text()
    for question, _ in EXAMPLES:
        assert question.replace("$", "\\$") in text or question in text


@pytest.mark.parametrize("mode", ["static", "socratic"])
@pytest.mark.parametrize(("question", "answer"), EXAMPLES)
def test_readme_examples_answered_right(
    embedded_url: str, mode: str, question: str, answer: str
) -> None:
    resp = httpx.post(
        f"{embedded_url}/solve", json={"question": question, "mode": mode}, timeout=300
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["answer"] == answer, body
    # Worked steps in GSM8K's style, the arithmetic done by the calculator.
    steps = " ".join(s["answer"] for s in body["subquestions"])
    if body["subquestions"]:
        assert re.search(r"<<[\d.+\-*/() ]+=[\d.\-]+>>", steps), body["subquestions"]


def _calculator_calls(url: str) -> int:
    metrics = httpx.get(f"{url}/metrics").text
    counted = re.findall(r'divconq_calculator_calls_total\{outcome="(\w+)"\} ([\d.]+)', metrics)
    return sum(int(float(n)) for _, n in counted)


def test_calculator_is_counted(embedded_url: str) -> None:
    """This request's own calculations, from the counter before and after it
    (the slow tier runs one test at a time)."""
    before = _calculator_calls(embedded_url)
    # Not from the response cache: the README tests asked the same question.
    body = {"question": EXAMPLES[0][0], "mode": "static", "cache": False}
    resp = httpx.post(f"{embedded_url}/solve", json=body, timeout=300)
    assert resp.status_code == 200, resp.text
    steps = " ".join(sub["answer"] for sub in resp.json()["subquestions"])
    calculations = re.findall(r"<<[\d.+\-*/() ]+=[\d.\-]+>>", steps)
    assert calculations, steps
    assert _calculator_calls(embedded_url) - before > 0


def test_evaluate_solver_scores_the_embedded_solver(embedded_url: str, tmp_path: Path) -> None:
    """`distill evaluate-solver` against the real solver, on the README's examples.

    Written as GSM8K Socratic decompositions: 2 + 1 steps, so each problem
    costs its steps teacher-forced, the chain and its answer, and the answer
    from the gold steps: 6 + 4 solver calls.
    """
    (sam, _), (lily, _) = EXAMPLES
    gold = tmp_path / "socratic.jsonl"
    gold.write_text(
        json.dumps(
            {
                "question": sam,
                "answer": "How many pencils are in the boxes? ** 5 * 8 = <<5*8=40>>40 pencils.\n"
                "How many pencils does he have left? ** 40 - 10 = <<40-10=30>>30 pencils.\n"
                "#### 30",
            }
        )
        + "\n"
        + json.dumps(
            {
                "question": lily,
                "answer": "How many pages does she read in 7 days? ** 10 * 7 = <<10*7=70>>70 pages."
                "\n#### 70",
            }
        )
        + "\n"
    )
    held_out = tmp_path / "held_out.jsonl"
    held_out.write_text("".join(json.dumps({"id": f"socratic-{i}"}) + "\n" for i in range(2)))
    out = tmp_path / "solver.json"
    proc = service_cli(
        "distill", "evaluate-solver", "--data", str(held_out), "--gold", str(gold),
        "--url", embedded_url, "--out", str(out),
    )  # fmt: skip
    assert "| problems | steps | step_accuracy |" in proc.stdout
    written = json.loads(out.read_text())
    report, problems = written["report"], written["problems"]
    assert (report["problems"], report["steps"], report["solver_calls"]) == (2, 3, 10)
    # Given the gold steps, the distilled solver states the answer.
    assert report["final_from_gold_steps"] == 1.0, problems
    # Its steps are GSM8K steps, the arithmetic done by the calculator.
    for p in problems:
        assert len(p["chain"]) == p["steps"] + 1
        assert re.search(r"<<[\d.+\-*/() ]+=[\d.\-]+>>", p["chain"][0]), p


@pytest.mark.parametrize(("question", "_answer"), EXAMPLES)
def test_hinted_answers_with_a_number(embedded_url: str, question: str, _answer: str) -> None:
    """`hinted` on the distilled solver is its `direct` task with the hints under the
    problem (docs/solvers.md), not the chat prompt whose "The answer is X." it copied."""
    resp = httpx.post(
        f"{embedded_url}/solve", json={"question": question, "mode": "hinted"}, timeout=300
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert re.fullmatch(r"-?\d+(\.\d+)?", body["answer"]), body
    assert body["subquestions"], body  # the decomposer's hints were given


def _events(text: str) -> list[tuple[str, dict[str, object]]]:
    out = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((lines["event"], json.loads(lines["data"])))
    return out


def test_streamed_answer_is_written_as_the_engine_writes_it(embedded_url: str) -> None:
    """The embedded solver streams the final answer in pieces that add up to it,
    with the same usage as the whole request; the raw model streams too."""
    question = EXAMPLES[1][0]
    # The cache off: a cached final call would come whole, as one piece.
    body = {"question": question, "mode": "direct", "cache": False}
    whole = httpx.post(f"{embedded_url}/solve", json=body, timeout=300).json()
    streamed = httpx.post(f"{embedded_url}/solve", json={**body, "stream": True}, timeout=300)
    events = _events(streamed.text)
    deltas = [str(d["text"]) for n, d in events if n == "answer_delta"]
    assert len(deltas) > 1 and "".join(deltas) == whole["answer_text"], events
    usage = dict(events)["usage"]
    assert isinstance(usage, dict)
    for stage in ("decomposer", "solver"):
        part = usage[stage]
        assert isinstance(part, dict)
        got, want = dict(part), dict(whole["usage"][stage])
        got.pop("latency_ms"), want.pop("latency_ms")
        assert got == want
    raw = httpx.post(
        f"{embedded_url}/v1/chat/completions",
        json={
            "messages": [{"role": "user", "content": "Say hi."}],
            "max_tokens": 8,
            "stream": True,
        },
        timeout=300,
    )
    chunks = [json.loads(b.removeprefix("data: ")) for b in raw.text.strip().split("\n\n")[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text and raw.text.rstrip().endswith("data: [DONE]")


@pytest.mark.parametrize(
    ("body", "role"),
    [
        # The two requests measured in issue 36: a 500 and a 502 before.
        ({"question": "7 " * 1999, "mode": "static"}, "decomposer"),
        (
            {
                "question": "How many crates?",
                "context": "The ledger lists 12 crates. " * 535,
                "mode": "direct",
            },
            "solver",
        ),
    ],
)
def test_prompts_past_the_engines_window_are_422_with_token_counts(
    embedded_url: str, body: dict[str, str], role: str
) -> None:
    resp = httpx.post(f"{embedded_url}/solve", json=body, timeout=120)
    assert resp.status_code == 422, resp.text
    message = resp.json()["error"]["message"]
    assert f"the {role}'s context window is 2048 tokens" in message
    needed, prompt, reserved = (int(n) for n in re.findall(r"\d+", message.split("needs ")[1])[:3])
    assert needed == prompt + reserved > 2048
