"""Socratic CoT training rows: question generator, subproblem solver, static (no model)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jinja2
import pytest

from service.distill import data, socratic
from service.distill.cli import DEFAULT_GOLD, DEFAULT_TRAIN
from service.embedded.model_prep import chat_template
from service.pipeline import prompts

WORKED = socratic.Worked(
    id="t-1",
    question="Zoe has 12 stickers. She buys 3 packs of 5 stickers. How many does she have?",
    answer="27",
    pairs=(
        ("How many stickers did she buy?", "She bought 3 * 5 = <<3*5=15>>15 stickers."),
        ("How many does she have now?", "She has 12 + 15 = <<12+15=27>>27 stickers."),
    ),
    source="gold",
)


def _targets(row: dict[str, object]) -> list[str]:
    text = str(row["text"])
    return [text[a:b] for a, b in row["targets"]]  # type: ignore[attr-defined]


def _render(messages: list[dict[str, str]]) -> str:
    template = jinja2.Environment().from_string(chat_template())
    return template.render(messages=messages, bos_token="<bos>", add_generation_prompt=True)


def test_question_generator_targets_each_subquestion_then_done() -> None:
    row = socratic.qgen_row(WORKED)
    assert _targets(row) == [
        " How many stickers did she buy?\n",
        " How many does she have now?\n",
        f" {prompts.DONE_MARKER}\n",
    ]
    # Each target follows exactly the prompt the service sends for that round.
    text = str(row["text"])
    history: list[tuple[str, str]] = []
    for (start, _), pair in zip(row["targets"], [*WORKED.pairs, None], strict=True):
        assert text[:start] == prompts.socratic_distilled(WORKED.question, history)
        if pair:
            history.append(pair)


def test_solver_chat_matches_the_chat_template_turn_by_turn() -> None:
    row = socratic.solve_row(WORKED)
    steps = [step for _, step in WORKED.pairs]
    final = prompts.distilled_answer_step("27")
    assert _targets(row) == [f"{s}<end_of_turn>" for s in [*steps, final]]
    text = str(row["text"])
    history: list[tuple[str, str]] = []
    for i, (start, _) in enumerate(row["targets"]):
        if i < len(WORKED.pairs):
            sub = WORKED.pairs[i][0]
            messages = prompts.distilled_subquestion(WORKED.question, sub, history)
            history.append(WORKED.pairs[i])
        else:
            messages = prompts.distilled_final(WORKED.question, history)
        assert text[:start] == _render(messages)
    assert row["eos"] is False


def test_direct_row_is_the_whole_solution_after_the_direct_prompt() -> None:
    solution = socratic.Worked(
        "t-2", WORKED.question, "27", tuple(("", s) for _, s in WORKED.pairs), "solution"
    )
    row = socratic.direct_row(solution)
    steps = " ".join(step for _, step in WORKED.pairs)
    assert _targets(row) == [f"{steps} The answer is 27.<end_of_turn>"]
    # The target follows exactly the prompt the service sends in `direct` mode.
    start = row["targets"][0][0]
    assert str(row["text"])[:start] == _render(prompts.distilled_direct(WORKED.question))


def _train_file(tmp_path: Path, first_question: str = "Q one?") -> Path:
    """A two-problem GSM8K training file: two steps (answer 6), then one (answer 3)."""
    path = tmp_path / "train.jsonl"
    problems = [
        {"question": first_question, "answer": "a <<1+1=2>>2\nb <<2*3=6>>6\n#### 6"},
        {"question": "Q two?", "answer": "c <<1+2=3>>3\n#### 3"},
    ]
    path.write_text("".join(json.dumps(p) + "\n" for p in problems))
    return path


def test_solutions_loader_skips_excluded_questions(tmp_path: Path) -> None:
    path = _train_file(tmp_path, "Q  one?")
    worked = socratic.load_solutions(path, ["Q one?"])  # whitespace does not hide a match
    assert [(w.id, w.answer, [s for _, s in w.pairs]) for w in worked] == [
        ("train-1", "3", ["c <<1+2=3>>3"])
    ]


def test_static_row_is_the_distilled_decomposition_with_end_of_sequence() -> None:
    row = socratic.static_row(WORKED)
    assert str(row["text"]).startswith(prompts.distilled_decomposition(WORKED.question))
    assert _targets(row) == [prompts.distilled_target([q for q, _ in WORKED.pairs])]
    assert row["eos"] is True


def test_gold_loader_merges_a_subquestion_asked_twice_in_a_row() -> None:
    answer = "A? ** x = <<1+1=2>>2\nA? ** y = <<2+2=4>>4\nB? ** z = <<4+1=5>>5\n#### 5"
    assert socratic._worked_pairs(answer) == (
        ("A?", "x = <<1+1=2>>2 y = <<2+2=4>>4"),
        ("B?", "z = <<4+1=5>>5"),
    )
    # Asked again later: an ambiguous chain, skipped.
    assert socratic._worked_pairs("A? ** 1\nB? ** 2\nA? ** 3\n#### 3") is None


def test_sdc_rows_line_up_with_solution_lines(tmp_path: Path) -> None:
    questions = _train_file(tmp_path)
    rows = [
        {"id": "train-0", "subquestions": ["First?", "Second?"]},
        {"id": "train-1", "subquestions": ["Only?", "Extra?"]},  # count differs: dropped
    ]
    worked = socratic.align_sdc(rows, questions)
    assert [w.pairs for w in worked] == [(("First?", "a <<1+1=2>>2"), ("Second?", "b <<2*3=6>>6"))]
    assert worked[0].answer == "6"
    assert worked[0].source == "sd-c"


@pytest.mark.parametrize("tasks", ["qgen,solve,static", "solve"])
def test_held_out_problems_never_train(tmp_path: Path, tasks: str) -> None:
    from service.core.settings import Settings
    from service.distill.cli import cmd_socratic

    args = argparse.Namespace(
        gold=str(DEFAULT_GOLD),
        sdc=None,
        questions=str(DEFAULT_TRAIN),
        tasks=tasks,
        solutions=str(DEFAULT_TRAIN),
        solutions_limit=40,
        gold_limit=None,
        held_out=150,
        seed=0,
        out=str(tmp_path),
    )
    assert cmd_socratic(args, Settings()) == 0
    train_ids = {r["id"] for r in data.read_dataset(tmp_path / "train.jsonl")}
    held_ids = {r["id"] for r in data.read_dataset(tmp_path / "problems" / "held_out.jsonl")}
    assert len(held_ids) == 150
    assert train_ids and not train_ids & held_ids
    # The same held-out problems as the static decomposer's split.
    gold = data.dedupe(data.load_gold(DEFAULT_GOLD))
    assert held_ids == {e.id for e in data.split(gold, 150, 0)[1]}
    rows = data.read_dataset(tmp_path / "train.jsonl")
    assert {r["task"] for r in rows} == {*tasks.split(","), "direct"}
    assert sum(r["task"] == "direct" for r in rows) == 40
    # Whole solutions come from the training file, which shares no problem with
    # the held-out ones; none of their questions appears among them either.
    held_questions = {
        " ".join(r["question"].split())
        for r in data.read_dataset(tmp_path / "problems" / "held_out.jsonl")
    }
    direct_texts = [r["text"] for r in rows if r["task"] == "direct"]
    assert not any(q in t for q in held_questions for t in direct_texts)


def test_gold_limit_samples_gold_problems_and_keeps_every_sdc_one(tmp_path: Path) -> None:
    from service.core.settings import Settings
    from service.distill.cli import cmd_socratic

    questions = _train_file(tmp_path)
    sdc = tmp_path / "sdc"
    sdc.mkdir()
    (sdc / "train.jsonl").write_text(
        json.dumps({"id": "train-0", "subquestions": ["First?", "Second?"]}) + "\n"
    )

    def gold_ids(limit: int | None, out: Path) -> set[str]:
        args = argparse.Namespace(
            gold=str(DEFAULT_GOLD),
            gold_limit=limit,
            sdc=str(sdc / "train.jsonl"),
            questions=str(questions),
            tasks="qgen,solve",
            solutions=None,
            solutions_limit=None,
            held_out=150,
            seed=0,
            out=str(out),
        )
        assert cmd_socratic(args, Settings()) == 0
        rows = data.read_dataset(out / "train.jsonl")
        assert {r["id"] for r in rows if r["source"] == "sd-c"} == {"train-0"}
        return {r["id"] for r in rows if r["source"] == "gold"}

    every = gold_ids(None, tmp_path / "all")
    some = gold_ids(100, tmp_path / "some")
    assert len(some) == 100 and some < every
    assert gold_ids(100, tmp_path / "again") == some  # seeded: the same problems again
