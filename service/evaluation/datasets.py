"""Evaluation datasets: loaders for four formats, auto-detection, selection.

Formats (``--format``):

- ``gsm8k``: JSONL, ``{"question", "answer"}`` with the answer ending in ``#### N``.
- ``socratic``: GSM8K Socratic JSONL: the same, but each worked step is a
  ``subquestion ** step`` line; the subquestions are the gold decomposition.
- ``svamp``: SVAMP-style JSON (a list; JSONL also accepted) of
  ``{"Body", "Question", "Answer"}``; the body goes to the service as ``context``.
- ``jsonl``: generic JSONL ``{"question", "answer"}``, optionally with ``id``,
  ``context`` and ``subquestions`` (a list of gold subquestions).

Only the file named is read: the default is the subset shipped in the
repository (``service/data/gsm8k/socratic_1000.jsonl``, MIT), never anything outside it.

The GSM8K field parsers here (``final_answer``, ``socratic_steps``,
``solution_steps``) are the project's only ones: distillation
(``service/distill/data.py``) reads its gold data with them too.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from service.data import GSM8K_SOCRATIC
from service.pipeline.prompts import FEWSHOT_SOURCE_INDICES

Format = Literal["gsm8k", "socratic", "svamp", "jsonl"]
FORMATS: tuple[Format, ...] = ("gsm8k", "socratic", "svamp", "jsonl")

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATASET = GSM8K_SOCRATIC

_FINAL_MARK = "####"
_STEP_SEPARATOR = " ** "


class DatasetError(ValueError):
    """The file is missing, malformed, or not in the format asked for."""


@dataclass(frozen=True)
class Problem:
    """One evaluation item. ``id`` is stable across runs: it keys resumable results."""

    id: str
    question: str
    answer: str
    context: str | None = None
    # None: the dataset has no gold decomposition (not the same as an empty one).
    gold_subquestions: tuple[str, ...] | None = None


def read_records(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"dataset not found: {path}") from None
    stripped = text.lstrip()
    records: list[Any]
    try:
        if stripped.startswith("["):
            records = json.loads(stripped)
        else:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not JSON or JSONL: {exc}") from None
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise DatasetError(f"{path}: record {i} is not an object")
    return records


# --- GSM8K answer fields ---------------------------------------------------------------


def final_answer(answer: str) -> str | None:
    """The ``#### N`` value of a GSM8K solution, thousands separators dropped; None if none."""
    if _FINAL_MARK not in answer:
        return None
    return answer.rsplit(_FINAL_MARK, 1)[-1].strip().replace(",", "") or None


def _solution(answer: str) -> list[str]:
    return answer.split(_FINAL_MARK, 1)[0].splitlines()


def socratic_pairs(answer: str) -> tuple[tuple[str, str], ...]:
    """(subquestion, worked step) pairs of a GSM8K Socratic solution."""
    pairs = []
    for line in _solution(answer):
        if _STEP_SEPARATOR in line:
            sub, step = line.split(_STEP_SEPARATOR, 1)
            pairs.append((sub.strip(), step.strip()))
    return tuple(pairs)


def socratic_steps(answer: str) -> tuple[str, ...]:
    """The gold subquestions of a GSM8K Socratic solution (``subquestion ** step`` lines)."""
    return tuple(sub for sub, _ in socratic_pairs(answer))


def solution_lines(answer: str) -> list[str]:
    """The step lines of a GSM8K solution (before ``#### N``)."""
    return [line.strip() for line in _solution(answer) if line.strip()]


def solution_steps(answer: str) -> int | None:
    """Steps of a GSM8K solution (one per line before ``#### N``); None if not one."""
    if _FINAL_MARK not in answer:
        return None
    return len(solution_lines(answer)) or None


def _is_socratic(answer: str) -> bool:
    return any(_STEP_SEPARATOR in line for line in _solution(answer))


def _gsm8k_final(answer: str) -> str:
    final = final_answer(answer)
    if final is None:
        raise DatasetError("GSM8K answer has no '#### N' line")
    return final


def detect_format(records: Sequence[dict[str, Any]]) -> Format:
    """The format of already-read records, judged on the first few."""
    if not records:
        raise DatasetError("dataset is empty")
    head = records[:20]
    if all({"Body", "Question", "Answer"} <= set(r) for r in head):
        return "svamp"
    if not all({"question", "answer"} <= set(r) for r in head):
        raise DatasetError(
            "unknown format: expected question/answer (GSM8K, generic) "
            "or Body/Question/Answer (SVAMP) fields"
        )
    answers = [r["answer"] for r in head]
    if all(isinstance(a, str) and "####" in a for a in answers):
        # One stray line without steps must not demote a Socratic file.
        return "socratic" if any(_is_socratic(a) for a in answers) else "gsm8k"
    return "jsonl"


def _record_id(rec: dict[str, Any], index: int) -> str:
    for key in ("id", "ID", "Id"):
        if key in rec and rec[key] is not None:
            return str(rec[key])
    # The line number: stable as long as the file is.
    return str(index)


def _answer_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _to_problem(rec: dict[str, Any], index: int, fmt: Format) -> Problem:
    pid = _record_id(rec, index)
    if fmt == "svamp":
        body = str(rec["Body"]).strip()
        return Problem(
            id=pid,
            question=str(rec["Question"]).strip(),
            answer=_answer_text(rec["Answer"]),
            context=body or None,
        )
    question = str(rec["question"]).strip()
    if fmt in ("gsm8k", "socratic"):
        raw = str(rec["answer"])
        return Problem(
            id=pid,
            question=question,
            answer=_gsm8k_final(raw),
            gold_subquestions=socratic_steps(raw) if fmt == "socratic" else None,
        )
    subs = rec.get("subquestions")
    context = rec.get("context")
    return Problem(
        id=pid,
        question=question,
        answer=_answer_text(rec["answer"]),
        context=str(context) if context else None,
        gold_subquestions=tuple(str(s) for s in subs) if isinstance(subs, list) else None,
    )


@dataclass(frozen=True)
class Dataset:
    path: Path
    format: Format
    problems: tuple[Problem, ...]
    skipped: int  # few-shot lines left out


def load(path: Path, fmt: Format | Literal["auto"] = "auto") -> Dataset:
    """Every problem in ``path``, in file order, and the format it was read as.

    The shipped default skips its few-shot lines (``FEWSHOT_SOURCE_INDICES``):
    the prompts contain them with their answers, so scoring them would flatter
    every decomposing mode.
    """
    records = read_records(path)
    chosen: Format = detect_format(records) if fmt == "auto" else fmt
    skip = set(FEWSHOT_SOURCE_INDICES) if path.resolve() == DEFAULT_DATASET else set()
    problems = []
    for i, rec in enumerate(records):
        if i in skip:
            continue
        try:
            problems.append(_to_problem(rec, i, chosen))
        except (KeyError, DatasetError) as exc:
            raise DatasetError(f"{path}: record {i} is not {chosen}: {exc}") from None
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        # Results are keyed by id: duplicates would silently share one result.
        raise DatasetError(f"{path}: problem ids are not unique")
    skipped = sum(1 for i in skip if i < len(records))
    return Dataset(path=path, format=chosen, problems=tuple(problems), skipped=skipped)


# The shipped adapter's record of the problems that trained it (socratic_1000 lines).
TRAINING_RECORD = REPO_ROOT / "service" / "adapters" / "gsm8k-socratic" / "training_problems.json"


def _key(question: str) -> str:
    return " ".join(question.split()).lower()


def training_questions(record: Path = TRAINING_RECORD) -> set[str]:
    """The questions that trained the shipped adapter (normalized), from its record."""
    if not record.is_file():
        return set()
    lines = set(json.loads(record.read_text(encoding="utf-8"))["training_lines"])
    records = read_records(DEFAULT_DATASET)
    return {_key(str(r["question"])) for i, r in enumerate(records) if i in lines}


def overlap(problems: Sequence[Problem], trained: set[str]) -> int:
    """How many of ``problems`` trained the shipped adapter."""
    return sum(1 for p in problems if _key(p.question) in trained)


def never_seen(dataset: Dataset, trained: set[str]) -> Dataset:
    """``dataset`` without the problems that trained the shipped adapter."""
    kept = tuple(p for p in dataset.problems if _key(p.question) not in trained)
    return Dataset(dataset.path, dataset.format, kept, dataset.skipped)


def select(problems: Sequence[Problem], limit: int | None, seed: int | None) -> list[Problem]:
    """The first ``limit`` problems, or a seeded random sample of ``limit``.

    With a seed the sample is reproducible, so an interrupted run with the same
    options resumes on the same problems.
    """
    chosen = list(problems)
    if seed is not None:
        random.Random(seed).shuffle(chosen)
    return chosen if limit is None else chosen[:limit]
