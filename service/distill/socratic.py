"""Socratic CoT training data: the question generator's and the subproblem solver's.

Both are taught from worked decompositions: a problem with (subquestion, step)
pairs, where a step is a GSM8K solution line with its calculator annotations
(``She has 48/2 = <<48/2=24>>24 left.``). Sources:

- gold: GSM8K Socratic rows (``subquestion ** step`` lines, ``service/data/gsm8k/``);
- sd-c: a decomposer's subquestions for a GSM8K training problem whose count
  equals the gold solution's step count, so subquestion *i* lines up with
  solution line *i* (``distill data --recipe sd-c`` writes them).

Each problem gives up to three training rows, each a text with the character
spans the loss covers (everything else is context):

- ``qgen``: the question generator's transcript, ``Problem: ...\\nQ1: ...\\nA1:
  ...\\nQ2: ...`` with the loss on every subquestion and on the DONE marker
  after the last one. One row holds every "next subquestion given the Q/A so
  far" example of a problem: with causal attention each target sees exactly
  the prefix the service gives it (``prompts.socratic_distilled``).
- ``solve``: the subproblem solver's multi-turn chat (``prompts.distilled_*``)
  rendered with the model's chat template, the loss on every model turn: one
  step per subquestion, then the answer step.
- ``static``: the static decomposer's row (``prompts.distilled_decomposition``),
  so the one distilled checkpoint keeps writing whole decompositions.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.distill.data import Example, gold_answer
from service.evaluation.datasets import socratic_pairs, solution_lines
from service.pipeline import prompts

TASKS = ("qgen", "solve", "static")
# Whole-problem rows come from solutions without subquestions (load_solutions).
SOLUTION_TASKS = ("direct",)
# The chat template's turn markers (service/embedded/templates/chat_template.jinja).
_TURN = "<start_of_turn>{role}\n"
_END = "<end_of_turn>\n"
_BOS = "<bos>"


@dataclass(frozen=True)
class Worked:
    """A problem with its subquestions and the step that answers each."""

    id: str
    question: str
    answer: str
    pairs: tuple[tuple[str, str], ...]
    source: str


def _worked_pairs(answer_field: str) -> tuple[tuple[str, str], ...] | None:
    pairs: list[tuple[str, str]] = []
    for sub, step in socratic_pairs(answer_field):
        if pairs and pairs[-1][0] == sub:
            # GSM8K Socratic sometimes asks one subquestion twice in a row, one
            # step each (about 18% of problems): one turn with both steps.
            pairs[-1] = (sub, f"{pairs[-1][1]} {step}")
        else:
            pairs.append((sub, step))
    subs = [s for s, _ in pairs]
    # A subquestion asked again later makes an ambiguous chain: skip the problem.
    if not pairs or len(set(subs)) != len(subs) or not all(s and t for s, t in pairs):
        return None
    return tuple(pairs)


def load_gold_worked(path: Path, keep: Iterable[str]) -> list[Worked]:
    """Worked problems from GSM8K Socratic JSONL, only the ids in ``keep``.

    Ids are ``<stem>-<line>``, as ``distill.data.load_gold`` names them, so
    the split that data gives (held-out problems never train) carries over.
    """
    wanted = set(keep)
    out = []
    with path.open() as fh:
        for line_no, line in enumerate(fh):
            key = f"{path.stem}-{line_no}"
            if key not in wanted or not line.strip():
                continue
            row = json.loads(line)
            pairs = _worked_pairs(row["answer"])
            if pairs is not None:
                out.append(
                    Worked(key, row["question"].strip(), gold_answer(row["answer"]), pairs, "gold")
                )
    return out


def align_sdc(rows: Iterable[dict[str, Any]], questions_path: Path) -> list[Worked]:
    """SD-C decompositions paired one to one with their problem's solution lines."""
    by_id: dict[str, dict[str, Any]] = {}
    with questions_path.open() as fh:
        for line_no, line in enumerate(fh):
            if line.strip():
                by_id[f"{questions_path.stem}-{line_no}"] = json.loads(line)
    out = []
    for row in rows:
        source = by_id.get(str(row.get("id")))
        subs = [str(s) for s in row.get("subquestions", [])]
        if source is None or not subs:
            continue
        steps = solution_lines(str(source["answer"]))
        if len(steps) != len(subs) or len(set(subs)) != len(subs):
            continue
        out.append(
            Worked(
                str(row["id"]),
                str(source["question"]).strip(),
                gold_answer(str(source["answer"])),
                tuple(zip(subs, steps, strict=True)),
                "sd-c",
            )
        )
    return out


class _Text:
    """A text built piece by piece, remembering which pieces are targets."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.targets: list[tuple[int, int]] = []
        self._len = 0

    def add(self, piece: str, *, target: bool = False) -> None:
        if target:
            self.targets.append((self._len, self._len + len(piece)))
        self.parts.append(piece)
        self._len += len(piece)

    def row(self, w: Worked, task: str, *, eos: bool = False) -> dict[str, Any]:
        return {
            "id": w.id,
            "task": task,
            "source": w.source,
            "text": "".join(self.parts),
            "targets": [list(t) for t in self.targets],
            # The tokenizer's end-of-sequence token follows the text, as a target.
            "eos": eos,
        }

    def extend_to(self, prompt: str) -> None:
        """Add what ``prompt`` has beyond the text so far (it must start with it)."""
        text = "".join(self.parts)
        if not prompt.startswith(text):
            raise ValueError("the next prompt does not extend the transcript")
        self.add(prompt[len(text) :])


def qgen_row(w: Worked) -> dict[str, Any]:
    """Every next-subquestion example of a problem, as one transcript."""
    t = _Text()
    history: list[tuple[str, str]] = []
    for sub, step in w.pairs:
        # The service's prompt for this round, then the subquestion it should write.
        t.extend_to(prompts.socratic_distilled(w.question, history))
        t.add(f" {sub}\n", target=True)
        history.append((sub, step))
    t.extend_to(prompts.socratic_distilled(w.question, history))
    t.add(f" {prompts.DONE_MARKER}\n", target=True)
    return t.row(w, "qgen")


def _chat(w: Worked, messages: list[dict[str, str]], task: str) -> dict[str, Any]:
    """A chat rendered with the chat template, the loss on every model turn."""
    t = _Text()
    # The template starts with BOS; the tokenizer adds none of its own.
    t.add(_BOS)
    for m in messages:
        if m["role"] == "assistant":
            t.add(_TURN.format(role="model"))
            # The end-of-turn marker is a target too: the model learns to stop.
            t.add(m["content"].strip() + "<end_of_turn>", target=True)
            t.add("\n")
        else:
            t.add(_TURN.format(role="user") + m["content"].strip() + _END)
    return t.row(w, task)


def solve_row(w: Worked) -> dict[str, Any]:
    """The subproblem solver's whole chat for a problem: a step per subquestion, then the answer."""
    history = [(sub, step) for sub, step in w.pairs]
    messages = prompts.distilled_final(w.question, history)
    messages.append({"role": "assistant", "content": prompts.distilled_answer_step(w.answer)})
    return _chat(w, messages, "solve")


def direct_row(w: Worked) -> dict[str, Any]:
    """The solver's whole-problem chat: every solution step on one line, then the answer."""
    steps = " ".join(step for _, step in w.pairs)
    reply = f"{steps} {prompts.distilled_answer_step(w.answer)}"
    messages = [*prompts.distilled_direct(w.question), {"role": "assistant", "content": reply}]
    return _chat(w, messages, "direct")


def load_solutions(path: Path, exclude: Iterable[str]) -> list[Worked]:
    """GSM8K problems (``train.jsonl``) as whole solutions, for ``direct`` rows.

    ``exclude`` holds questions that must not train (the held-out problems),
    compared after collapsing whitespace: a guard, since GSM8K's train file
    and the held-out test problems share none today.
    """
    banned = {" ".join(q.split()) for q in exclude}
    out = []
    with path.open() as fh:
        for line_no, line in enumerate(fh):
            if not line.strip():
                continue
            row = json.loads(line)
            question = str(row["question"]).strip()
            if " ".join(question.split()) in banned:
                continue
            steps = solution_lines(str(row["answer"]))
            if not steps:
                continue
            pairs = tuple(("", step) for step in steps)
            key = f"{path.stem}-{line_no}"
            out.append(Worked(key, question, gold_answer(str(row["answer"])), pairs, "solution"))
    return out


def static_row(w: Worked) -> dict[str, Any]:
    t = _Text()
    t.add(prompts.distilled_decomposition(w.question))
    t.add(prompts.distilled_target([s for s, _ in w.pairs]), target=True)
    return t.row(w, "static", eos=True)


def rows_for(worked: Iterable[Worked], tasks: Sequence[str] = TASKS) -> list[dict[str, Any]]:
    makers = {"qgen": qgen_row, "solve": solve_row, "static": static_row, "direct": direct_row}
    return [makers[task](w) for w in worked for task in tasks]


def write_rows(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
            n += 1
    return n


def split_ids(train: Sequence[Example], held: Sequence[Example]) -> tuple[list[str], list[str]]:
    return [e.id for e in train], [e.id for e in held]
