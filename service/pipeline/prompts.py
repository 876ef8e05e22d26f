"""Every prompt the service sends, in one place.

Decomposer prompts are plain completions: the embedded decomposer is a small
*base* model, which follows a few-shot pattern far better than instructions.
Solver prompts are chat messages for an instruction-tuned model.

The few-shot problems are GSM8K test problems 970, 978 and 985 of
``service/data/gsm8k/socratic_1000.jsonl`` (MIT licence, see service/data/gsm8k/LICENSE),
with their gold Socratic subquestions; the evaluation harness skips them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

FEWSHOT_SOURCE_INDICES = (970, 978, 985)


@dataclass(frozen=True)
class Example:
    question: str
    steps: tuple[tuple[str, str], ...]  # (subquestion, worked answer)


EXAMPLES: tuple[Example, ...] = (
    Example(
        "Zeke's baseball team has 7 more players than Carlton's. If Carlton's team has 13 "
        "players, how many players are there in both teams combined?",
        (
            ("How many players are in Zeke's team?", "Zeke's team has 13 + 7 = 20 players."),
            (
                "How many players are in both teams combined?",
                "In total the two teams have 20 + 13 = 33 players.",
            ),
        ),
    ),
    Example(
        "The red car is 40% cheaper than the blue car. The price of the blue car is $100. "
        "How much do both cars cost?",
        (
            (
                "How much is the red car cheaper than the blue car?",
                "The red car is 40/100 * 100 = $40 cheaper.",
            ),
            ("How much does the red car cost?", "The red car costs 100 - 40 = $60."),
            ("How much do both cars cost?", "Both cars cost 100 + 60 = $160."),
        ),
    ),
    Example(
        "Edgar eats 18 pretzels a day. If his brother eats 1/2 as many, how many does his "
        "brother eat in a week?",
        (
            ("How many pretzels does his brother eat a day?", "His brother eats 18 / 2 = 9."),
            (
                "How many pretzels does his brother eat in a week?",
                "His brother eats 9 * 7 = 63 in a week.",
            ),
        ),
    ),
)

# Divide-or-Conquer's "no decomposition" option: a one-step question gets none.
NO_DECOMPOSITION_EXAMPLE = "A pen costs $3. How much do 4 pens cost?"
NONE_MARKER = "none"
DONE_MARKER = "DONE"


def _problem(question: str, context: str | None) -> str:
    return f"{context.strip()}\n{question.strip()}" if context else question.strip()


# --- decomposer (completion prompts) --------------------------------------------

_STATIC_HEADER = (
    "Break each problem into the few subquestions needed to solve it, in order. "
    f"Write '{NONE_MARKER}' if it needs no subquestions.\n\n"
)


def static_decomposition(question: str, context: str | None = None) -> str:
    """One call, all subquestions as a numbered list (Divide-or-Conquer static)."""
    # The no-decomposition example goes first: last in line, a small model
    # copies it far too often.
    parts = [
        _STATIC_HEADER,
        f"Problem: {NO_DECOMPOSITION_EXAMPLE}\nSubquestions:\n{NONE_MARKER}\n\n",
    ]
    for ex in EXAMPLES:
        items = "\n".join(f"{i}. {q}" for i, (q, _) in enumerate(ex.steps, 1))
        parts.append(f"Problem: {ex.question}\nSubquestions:\n{items}\n\n")
    parts.append(f"Problem: {_problem(question, context)}\nSubquestions:\n")
    return "".join(parts)


def distilled_decomposition(question: str, context: str | None = None) -> str:
    """The short zero-shot prompt a distilled decomposer (LoRA adapter) is trained on.

    No few-shot examples: the adapter has learned the format, which is what
    makes the distilled decomposer cheap (a tenth of the prompt tokens).
    """
    return f"Problem: {_problem(question, context)}\nSubquestions:\n"


def distilled_target(subquestions: Sequence[str]) -> str:
    """What the distilled decomposer is trained to write (then end of sequence)."""
    if not subquestions:
        return f"{NONE_MARKER}\n"
    return "".join(f"{i}. {q}\n" for i, q in enumerate(subquestions, 1))


def static_stop(max_subquestions: int) -> list[str]:
    # Stopping when item N+1 starts saves the tokens the cap would discard.
    return ["\n\n", "\nProblem:", f"\n{max_subquestions + 1}."]


def socratic_next(
    question: str, history: Sequence[tuple[str, str]], context: str | None = None
) -> str:
    """Prompt for the next subquestion given the Q/A so far (Shridhar et al.)."""
    parts = [
        "Solve each problem by asking one subquestion at a time. "
        f"After the last one, write {DONE_MARKER}.\n\n"
    ]
    for ex in EXAMPLES:
        lines = [f"Problem: {ex.question}"]
        for i, (q, a) in enumerate(ex.steps, 1):
            lines += [f"Subquestion {i}: {q}", f"Answer {i}: {a}"]
        lines.append(f"Subquestion {len(ex.steps) + 1}: {DONE_MARKER}")
        parts.append("\n".join(lines) + "\n\n")
    lines = [f"Problem: {_problem(question, context)}"]
    for i, (q, a) in enumerate(history, 1):
        lines += [f"Subquestion {i}: {q}", f"Answer {i}: {_one_line(a)}"]
    lines.append(f"Subquestion {len(history) + 1}:")
    parts.append("\n".join(lines))
    return "".join(parts)


SOCRATIC_STOP = ["\n"]


def socratic_distilled(
    question: str, history: Sequence[tuple[str, str]], context: str | None = None
) -> str:
    """The distilled question generator's prompt: the problem and the Q/A so far.

    Zero-shot, like the static distilled prompt: the model learned the format
    (``service/distill/socratic.py`` writes its training transcripts). It
    writes the next subquestion, or DONE, then a newline.
    """
    lines = [f"Problem: {_problem(question, context)}"]
    for i, (q, a) in enumerate(history, 1):
        lines += [f"Q{i}: {q}", f"A{i}: {_one_line(a)}"]
    lines.append(f"Q{len(history) + 1}:")
    return "\n".join(lines)


def _one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


# --- solver (chat messages) ------------------------------------------------------

Messages = list[dict[str, str]]

SOLVER_SYSTEM = "You are a careful problem solver. Be concise and show the arithmetic you use."
FINAL_INSTRUCTION = "End with a line of the form 'The answer is X.'"


def _qa_block(history: Sequence[tuple[str, str]]) -> str:
    return "\n".join(f"Q{i}: {q}\nA{i}: {_one_line(a)}" for i, (q, a) in enumerate(history, 1))


def subquestion(
    question: str, sub: str, history: Sequence[tuple[str, str]], context: str | None = None
) -> Messages:
    body = f"Problem: {_problem(question, context)}\n\n"
    if history:
        body += f"Answered so far:\n{_qa_block(history)}\n\n"
    body += f"Answer only this subquestion, in one or two sentences: {sub}"
    return [{"role": "system", "content": SOLVER_SYSTEM}, {"role": "user", "content": body}]


# --- the distilled subproblem solver (the embedded default) ----------------------
#
# A multi-turn chat: the first user turn holds the problem and the first
# subquestion, each later one a subquestion; each model turn is one worked
# GSM8K step with calculator annotations (``48/2 = <<48/2=24>>24``). The
# final answer is one more step, asked for with FINAL_SUBQUESTION. Training
# packs a whole problem into one such chat (service/distill/socratic.py), so
# every turn sees exactly the prefix it sees here.

FINAL_SUBQUESTION = "So what is the answer to the problem?"


def _distilled_turns(
    question: str, history: Sequence[tuple[str, str]], ask: str, context: str | None
) -> Messages:
    messages: Messages = []
    for q, a in [*history, (ask, None)]:
        turn = f"Q: {q}"
        if not messages:
            turn = f"Problem: {_problem(question, context)}\n{turn}"
        messages.append({"role": "user", "content": turn})
        if a is not None:
            messages.append({"role": "assistant", "content": _one_line(a)})
    return messages


def distilled_subquestion(
    question: str, sub: str, history: Sequence[tuple[str, str]], context: str | None = None
) -> Messages:
    """The distilled solver's messages for one subquestion, after the earlier Q/A."""
    return _distilled_turns(question, history, sub, context)


def distilled_final(
    question: str, history: Sequence[tuple[str, str]], context: str | None = None
) -> Messages:
    """The distilled solver's last step: the answer, as 'The answer is X.'"""
    return _distilled_turns(question, history, FINAL_SUBQUESTION, context)


# The distilled solver's whole-problem task (``direct`` mode): every step on one
# line, then the answer step. Trained on every GSM8K training solution, so it
# also carries most of the arithmetic the one-step task draws on.
DIRECT_SUBQUESTION = "Solve the problem step by step."


def distilled_direct(question: str, context: str | None = None) -> Messages:
    """The distilled solver's messages for a whole problem, no subquestions."""
    return _distilled_turns(question, [], DIRECT_SUBQUESTION, context)


def distilled_hinted(
    question: str, subquestions: Sequence[str], context: str | None = None
) -> Messages:
    """``hinted`` for the distilled solver: its whole-problem task, hints under the problem.

    It was trained on no hinted task, and the chat prompt's instructions it
    copies ("The answer is X."). So ``hinted`` maps to what it was trained on,
    the ``direct`` task, with the subquestions listed after the problem as its
    context lines (the decomposer's plan, in the problem's own words).
    """
    if not subquestions:
        return distilled_direct(question, context)
    hints = "\n".join(f"{i}. {q}" for i, q in enumerate(subquestions, 1))
    problem = f"{_problem(question, context)}\nHints:\n{hints}"
    return _distilled_turns(problem, [], DIRECT_SUBQUESTION, None)


def distilled_answer_step(answer: str) -> str:
    """How the distilled solver's final step is written (its training target)."""
    return f"The answer is {answer}."


def final(
    question: str, history: Sequence[tuple[str, str]], context: str | None = None
) -> Messages:
    body = f"Problem: {_problem(question, context)}\n\n"
    if history:
        body += f"Subquestions and their answers:\n{_qa_block(history)}\n\n"
        body += "Using these, answer the problem. "
    else:
        body += "Answer the problem step by step. "
    body += FINAL_INSTRUCTION
    return [{"role": "system", "content": SOLVER_SYSTEM}, {"role": "user", "content": body}]


def hinted(question: str, subquestions: Sequence[str], context: str | None = None) -> Messages:
    body = f"Problem: {_problem(question, context)}\n\n"
    if subquestions:
        hints = "\n".join(f"{i}. {q}" for i, q in enumerate(subquestions, 1))
        body += f"Hints: these subquestions lead to the answer:\n{hints}\n\n"
    body += f"Answer the problem step by step. {FINAL_INSTRUCTION}"
    return [{"role": "system", "content": SOLVER_SYSTEM}, {"role": "user", "content": body}]


def direct(question: str, context: str | None = None) -> Messages:
    body = (
        f"Problem: {_problem(question, context)}\n\nLet's think step by step. {FINAL_INSTRUCTION}"
    )
    return [{"role": "system", "content": SOLVER_SYSTEM}, {"role": "user", "content": body}]
