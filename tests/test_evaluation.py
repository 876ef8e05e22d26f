"""The evaluation harness, item by item: dataset loaders and scoring functions.

All pure (files under tmp_path). Summaries, reports, the runner and a real
``python -m service eval`` run are in test_evaluation_runs.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from service.evaluation import datasets, scoring
from service.evaluation.datasets import DatasetError, Problem


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


# --- loaders ------------------------------------------------------------------------


def test_load_gsm8k(tmp_path: Path) -> None:
    path = _write_jsonl(
        tmp_path / "g.jsonl",
        [
            {"question": "Q one?", "answer": "Work 1+1=<<1+1=2>>2\n#### 2"},
            {"question": "Q two?", "answer": "Big sum.\n#### 1,234"},
        ],
    )
    ds = datasets.load(path)
    assert ds.format == "gsm8k"
    assert [(p.id, p.question, p.answer) for p in ds.problems] == [
        ("0", "Q one?", "2"),
        ("1", "Q two?", "1234"),
    ]
    assert all(p.gold_subquestions is None for p in ds.problems)
    assert ds.skipped == 0


def test_load_socratic(tmp_path: Path) -> None:
    path = _write_jsonl(
        tmp_path / "s.jsonl",
        [
            {
                "question": "Janet has 16 eggs and eats 3. She sells the rest for $2. How much?",
                "answer": "How many eggs does she sell? ** 16 - 3 = 13\n"
                "How much does she make? ** 13 * 2 = $26\n#### 26",
            }
        ],
    )
    ds = datasets.load(path)
    assert ds.format == "socratic"
    (p,) = ds.problems
    assert p.answer == "26"
    assert p.gold_subquestions == ("How many eggs does she sell?", "How much does she make?")
    # The same file read as plain GSM8K keeps the answer but has no gold decomposition.
    assert datasets.load(path, "gsm8k").problems[0].gold_subquestions is None


def test_load_svamp_json(tmp_path: Path) -> None:
    path = tmp_path / "svamp.json"
    path.write_text(
        json.dumps(
            [
                {
                    "ID": "chal-1",
                    "Body": "Each pack of dvds costs 76 dollars. There is a discount of 25.",
                    "Question": "How much do you have to pay to buy each pack?",
                    "Equation": "( 76.0 - 25.0 )",
                    "Answer": 51.0,
                },
                {"ID": "chal-2", "Body": "", "Question": "Half of 5?", "Answer": 2.5},
            ]
        ),
        encoding="utf-8",
    )
    ds = datasets.load(path)
    assert ds.format == "svamp"
    first, second = ds.problems
    assert first == Problem(
        id="chal-1",
        question="How much do you have to pay to buy each pack?",
        answer="51",
        context="Each pack of dvds costs 76 dollars. There is a discount of 25.",
    )
    assert (second.answer, second.context) == ("2.5", None)


def test_load_generic_jsonl(tmp_path: Path) -> None:
    path = _write_jsonl(
        tmp_path / "generic.jsonl",
        [
            {"id": "q-7", "question": "Capital of France?", "answer": "Paris"},
            {
                "question": "2 + 3 * 4?",
                "answer": 14,
                "context": "Arithmetic.",
                "subquestions": ["What is 3 * 4?", "What is 2 + 12?"],
            },
        ],
    )
    ds = datasets.load(path)
    assert ds.format == "jsonl"
    a, b = ds.problems
    assert (a.id, a.answer, a.gold_subquestions) == ("q-7", "Paris", None)
    assert (b.id, b.answer, b.context) == ("1", "14", "Arithmetic.")
    assert b.gold_subquestions == ("What is 3 * 4?", "What is 2 + 12?")


def test_loader_errors(tmp_path: Path) -> None:
    gsm = _write_jsonl(tmp_path / "g.jsonl", [{"question": "Q?", "answer": "x\n#### 3"}])
    with pytest.raises(DatasetError, match="not svamp"):
        datasets.load(gsm, "svamp")
    odd = _write_jsonl(tmp_path / "odd.jsonl", [{"text": "no question here"}])
    with pytest.raises(DatasetError, match="unknown format"):
        datasets.load(odd)
    dup = _write_jsonl(
        tmp_path / "dup.jsonl",
        [{"id": 1, "question": "A?", "answer": 1}, {"id": 1, "question": "B?", "answer": 2}],
    )
    with pytest.raises(DatasetError, match="not unique"):
        datasets.load(dup)
    with pytest.raises(DatasetError, match="not found"):
        datasets.load(tmp_path / "missing.jsonl")


def test_default_dataset_is_shipped_and_skips_fewshot() -> None:
    from service.pipeline.prompts import FEWSHOT_SOURCE_INDICES

    path = datasets.DEFAULT_DATASET
    assert path.is_relative_to(datasets.REPO_ROOT)
    assert (path.parent / "LICENSE").read_text().startswith("MIT License")
    lines = path.read_text(encoding="utf-8").splitlines()
    ds = datasets.load(path)
    assert ds.format == "socratic"
    assert len(ds.problems) == len(lines) - len(FEWSHOT_SOURCE_INDICES)
    fewshot = {json.loads(lines[i])["question"].strip() for i in FEWSHOT_SOURCE_INDICES}
    assert not fewshot & {p.question for p in ds.problems}
    assert all(p.gold_subquestions for p in ds.problems)


def test_select_limit_and_seed() -> None:
    problems = [Problem(id=str(i), question=f"q{i}", answer=str(i)) for i in range(30)]
    assert [p.id for p in datasets.select(problems, 3, None)] == ["0", "1", "2"]
    assert datasets.select(problems, None, None) == problems
    sample = datasets.select(problems, 5, seed=7)
    assert sample == datasets.select(problems, 5, seed=7)
    assert sample != problems[:5]
    assert datasets.select(problems, 5, seed=8) != sample


# --- scoring: answers ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("pred", "gold", "correct"),
    [
        ("18", "18", True),
        ("18.0", "18", True),
        ("$1,234", "1234", True),
        ("18.00001", "18", True),  # float noise
        ("18.01", "18", False),
        ("17", "18", False),
        ("", "18", False),
        ("50%", "50", True),
        ("-3", "-3", True),
        ("3/4", "0.75", True),
        ("7 apples", "7", True),
        ("The Eiffel Tower!", "eiffel tower", True),  # text: normalized exact match
        ("Paris, France", "Paris", False),
        ("", "", False),
    ],
)
def test_answer_correct(pred: str, gold: str, correct: bool) -> None:
    assert scoring.answer_correct(pred, gold) is correct


def test_normalize_text() -> None:
    assert scoring.normalize_text("  The  Answer, is: A cat! ") == "answer is cat"


# --- scoring: decomposition ---------------------------------------------------------


def test_token_f1() -> None:
    assert scoring.token_f1("How many eggs?", "how many EGGS") == 1.0
    assert scoring.token_f1("red blue", "cat dog") == 0.0
    # 2 of 3 tokens shared each way: P = R = 2/3.
    assert scoring.token_f1("how many eggs", "how many apples") == pytest.approx(2 / 3)
    assert scoring.token_f1("", "") == 1.0
    assert scoring.token_f1("", "x") == 0.0


def test_decomposition_f1() -> None:
    gold = ["red blue green", "cat dog fish"]
    assert scoring.decomposition_f1(gold, gold) == pytest.approx(1.0)
    assert scoring.decomposition_f1(gold, []) == 0.0
    assert scoring.decomposition_f1([], ["anything"]) is None
    # Gold side (1 + 0) / 2 = 0.5, predicted side 1: harmonic mean 2/3.
    assert scoring.decomposition_f1(gold, ["red blue green"]) == pytest.approx(2 / 3)
    # Order does not matter, an extra unrelated item lowers the predicted side:
    # gold side 1, predicted side 2/3, harmonic mean 0.8.
    assert scoring.decomposition_f1(
        gold, ["cat dog fish", "red blue green", "owl"]
    ) == pytest.approx(0.8)
    assert scoring.decomposition_f1(gold, ["owl"]) == 0.0


def test_has_duplicate() -> None:
    assert scoring.has_duplicate(["How many?", "how many"])
    # Token F1 = 14/15 >= 0.9: a near-duplicate the service's exact dedup keeps.
    assert scoring.has_duplicate(
        ["How many eggs does Janet sell each day?", "How many eggs does Janet sell each day now?"]
    )
    assert not scoring.has_duplicate(["How many eggs?", "How much money does she make?"])
    assert not scoring.has_duplicate(["One question only?"])
    assert not scoring.has_duplicate([])


def test_percentile() -> None:
    assert scoring.percentile([4.0, 1.0, 3.0, 2.0], 50) == pytest.approx(2.5)
    assert scoring.percentile([1.0, 2.0, 3.0, 4.0], 95) == pytest.approx(3.85)
    assert scoring.percentile([1.0, 2.0, 3.0, 4.0], 0) == 1.0
    assert scoring.percentile([1.0, 2.0, 3.0, 4.0], 100) == 4.0
    assert scoring.percentile([5.0], 95) == 5.0
    assert scoring.percentile([], 50) is None
    with pytest.raises(ValueError):
        scoring.percentile([1.0], 101)
