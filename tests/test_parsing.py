"""Decomposer output parsing and final-answer extraction (no model needed)."""

from __future__ import annotations

import pytest

from service.pipeline import prompts
from service.pipeline.parsing import (
    extract_answer,
    parse_decomposition,
    parse_next_subquestion,
    parse_subquestions,
)


@pytest.mark.parametrize(
    "text",
    [
        "1. How many eggs are left?\n2. How much does she earn?",
        "1) How many eggs are left?\n\n2) How much does she earn?",
        "- How many eggs are left?\n* How much does she earn?",
        "Q1: How many eggs are left?\nQ2: How much does she earn?",
        "Subquestion 1: How many eggs are left?\nSubquestion 2: How much does she earn?",
    ],
)
def test_list_styles(text: str) -> None:
    assert parse_subquestions(text, cap=5) == [
        "How many eggs are left?",
        "How much does she earn?",
    ]


def test_repeats_dropped_and_cap_enforced() -> None:
    text = "1. A?\n2. a?\n3. B?\n4. C?\n5. D?"
    assert parse_subquestions(text, cap=2) == ["A?", "B?"]
    assert parse_subquestions(text, cap=10) == ["A?", "B?", "C?", "D?"]
    assert parse_decomposition(text, cap=10) == (["A?", "B?", "C?", "D?"], 1)
    # Punctuation and case do not make a new subquestion.
    assert parse_decomposition("1. A?\n2. A?\n3. a.\n4. B?", cap=10) == (["A?", "B?"], 2)


def test_none_means_no_decomposition() -> None:
    assert parse_subquestions("none", cap=4) == []
    assert parse_subquestions("None.", cap=4) == []
    assert parse_subquestions("\n2.\n3.\n", cap=4) == []


def test_stops_at_next_fewshot_block() -> None:
    assert parse_subquestions("1. A?\nProblem: next one\n1. B?", cap=4) == ["A?"]


def test_socratic_next() -> None:
    assert parse_next_subquestion(" How many eggs?", []) == "How many eggs?"
    assert parse_next_subquestion(" DONE", ["x"]) is None
    assert parse_next_subquestion(" How many eggs?", ["how many eggs"]) is None
    assert parse_next_subquestion("", []) is None


@pytest.mark.parametrize(
    ("text", "question", "expected"),
    [
        ("9 eggs * $2 = $18. The answer is 18.", "How much?", "18"),
        ("So she makes $1,800.00 a day.", "How much does she make?", "1800"),
        ("#### 72", "How many clips?", "72"),
        ("The answer is 3.5 hours", "How long, in hours?", "3.5"),
        (
            "Paris is the capital. It is on the Seine.",
            "What is the capital of France?",
            "Paris is the capital.",
        ),
        ("The answer is yes.", "Is the sky blue?", "yes"),
        ("", "How many?", ""),
    ],
)
def test_extract_answer(text: str, question: str, expected: str) -> None:
    assert extract_answer(text, question) == expected


def test_prompts_carry_question_and_context() -> None:
    p = prompts.static_decomposition("How many apples?", context="Tom has 3 apples.")
    assert p.endswith("Problem: Tom has 3 apples.\nHow many apples?\nSubquestions:\n")
    assert prompts.static_stop(3)[-1] == "\n4."
    msgs = prompts.final("Q?", [("a?", "1"), ("b?", "2")])
    assert "Q1: a?\nA1: 1\nQ2: b?\nA2: 2" in msgs[-1]["content"]
    assert [m["role"] for m in prompts.direct("Q?")] == ["system", "user"]


def test_dependency_waves() -> None:
    from service.pipeline.dependencies import waves

    independent = ["How many apples does Tom have?", "How many pears does Ann buy?"]
    assert waves(independent) == [[0, 1]]
    # "in total" refers back; "red car" is asked about again.
    assert waves([*independent, "How many fruits do they have in total?"]) == [[0, 1], [2]]
    assert waves(["How much cheaper is the red car?", "How much does the red car cost?"]) == [
        [0],
        [1],
    ]
    assert waves([]) == []
    assert waves(["One question?"]) == [[0]]
