"""The calculator in the loop, as in GSM8K's own sampling code.

The distilled solver writes steps the way GSM8K does, with calculator
annotations: ``She has 48/2 = <<48/2=24>>24 left.`` A 270M model gets the
reasoning right far more often than the arithmetic, so when it closes an
annotation the service computes the expression itself, writes the true
value into the annotation, and generation goes on from there: the model
then copies the right number into the rest of the step.

(GSM8K's sampler stops at the ``=`` inside ``<<``; stopping at the closing
``>>`` and replacing the value the model wrote gives the same text with one
engine call per annotation instead of two.)

The evaluator is safe by construction: it walks Python's AST and accepts
numbers, ``+ - * /``, unary signs and parentheses, nothing else: no names,
no calls, no attribute access, no powers. It never uses ``eval``.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from service.core.completion import Completion

MAX_EXPRESSION_CHARS = 120
# Bounds the work one expression can cause and keeps values printable.
MAX_MAGNITUDE = 1e15
# Annotations per reply (each is one more engine call); GSM8K steps have 1-2.
MAX_ROUNDS = 8
OPEN, CLOSE = "<<", ">>"

Outcome = Literal["computed", "corrected", "rejected"]

_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}
# The annotation being closed: "<<" then an expression, "=", the model's value.
_OPEN_ANNOTATION = re.compile(r"<<([^<>=]*)=([^<>=]*)$")


class CalculatorError(ValueError):
    """The expression is malformed, unsafe, or has no finite value."""


def evaluate(expression: str) -> float:
    """The value of an arithmetic expression: numbers, + - * /, parentheses."""
    text = expression.strip().replace(",", "")
    if not text or len(text) > MAX_EXPRESSION_CHARS:
        raise CalculatorError("empty or too long")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise CalculatorError("not an arithmetic expression") from None
    return _value(tree.body)


def _value(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        # bool is an int subclass: True/False are names in the source, never numbers.
        if isinstance(node.value, bool):
            raise CalculatorError("bool is not allowed")
        result = float(node.value)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        inner = _value(node.operand)
        result = -inner if isinstance(node.op, ast.USub) else inner
    elif isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Div) and right == 0:
            raise CalculatorError("division by zero")
        result = _BINARY[type(node.op)](left, right)
    else:
        raise CalculatorError(f"{type(node).__name__} is not allowed")
    if not math.isfinite(result) or abs(result) > MAX_MAGNITUDE:
        raise CalculatorError("value out of range")
    return result


def format_value(value: float) -> str:
    """GSM8K style: integers without a decimal point, else at most 6 decimals."""
    if abs(value - round(value)) < 1e-9:
        return str(round(value))
    return f"{value:.6f}".rstrip("0").rstrip(".")


def close_annotation(text: str) -> tuple[str, Outcome]:
    """``text`` ends inside an annotation about to close: put the true value in.

    Returns the text with ``>>`` appended (and the value replaced where the
    expression computes), and what happened. A malformed or unsafe expression
    leaves the text as the model wrote it.
    """
    match = _OPEN_ANNOTATION.search(text)
    if match is None:
        return text + CLOSE, "rejected"
    try:
        value = format_value(evaluate(match.group(1)))
    except CalculatorError:
        return text + CLOSE, "rejected"
    written = match.group(2).strip()
    outcome: Outcome = "computed" if written == value else "corrected"
    return text[: match.start(2)] + value + CLOSE, outcome


Generate = Callable[[str, int, Sequence[str]], Awaitable[Completion]]


@dataclass
class CalculatorRun:
    """A reply written with the calculator, with its accounting."""

    completion: Completion
    outcomes: list[Outcome]


async def generate_with_calculator(
    generate: Generate, prompt: str, *, max_tokens: int, stop: Sequence[str]
) -> CalculatorRun:
    """Generate a reply, computing every ``<<expression=value>>`` the model closes.

    ``generate(prompt, max_tokens, stop)`` is one engine call. Token counts
    add up over the calls: the prompt tokens of the first (later calls reuse
    its prefix), the completion tokens the model wrote in all of them.
    """
    text = ""
    outcomes: list[Outcome] = []
    prompt_tokens = completion_tokens = 0
    finish = "stop"
    for _ in range(MAX_ROUNDS + 1):
        budget = max_tokens - completion_tokens
        if budget <= 0:
            finish = "length"
            break
        part = await generate(prompt + text, budget, [*stop, CLOSE])
        prompt_tokens = prompt_tokens or part.prompt_tokens
        completion_tokens += part.completion_tokens
        text += part.text
        finish = part.finish_reason
        if part.stop_reason != CLOSE:
            break
        if _OPEN_ANNOTATION.search(text) is None or len(outcomes) >= MAX_ROUNDS:
            # A '>>' outside an annotation (or past the last round) stays as written.
            text += CLOSE
            if len(outcomes) >= MAX_ROUNDS:
                break
            continue
        text, outcome = close_annotation(text)
        outcomes.append(outcome)
    return CalculatorRun(Completion(text, prompt_tokens, completion_tokens, finish), outcomes)
