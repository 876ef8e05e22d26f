"""The calculator in the loop: the safe evaluator and the generation loop (no model)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from service.core.completion import Completion
from service.embedded.calculator import (
    CLOSE,
    CalculatorError,
    close_annotation,
    evaluate,
    format_value,
    generate_with_calculator,
)


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("48/2", 24.0),
        ("16-3-4", 9.0),
        ("80000+50000", 130000.0),
        ("(3+4)*2", 14.0),
        ("-5+2", -3.0),
        ("0.2*50", 10.0),
        ("1,200*3", 3600.0),  # thousands separators, as GSM8K sometimes writes them
        (" 7 * 1.5 ", 10.5),
    ],
)
def test_evaluates_arithmetic(expression: str, value: float) -> None:
    assert evaluate(expression) == pytest.approx(value)


@pytest.mark.parametrize(
    "expression",
    [
        "",
        "__import__('os').system('true')",
        "x+1",
        "abs(-3)",
        "2**10",  # powers are not GSM8K arithmetic and can explode
        "9//2",
        "5%2",
        "1/0",
        "True+1",
        "[1,2]",
        "1 if 1 else 2",
        "4+",
        "1e400",
        "9" * 200,
        "'3'*3",
        "(1).real",
    ],
)
def test_rejects_anything_else(expression: str) -> None:
    with pytest.raises(CalculatorError):
        evaluate(expression)


def test_format_value_is_gsm8k_style() -> None:
    assert format_value(24.0) == "24"
    assert format_value(0.2) == "0.2"
    assert format_value(1 / 3) == "0.333333"
    assert format_value(-3.0) == "-3"


def test_close_annotation_corrects_and_keeps() -> None:
    assert close_annotation("She sold 48/2 = <<48/2=25") == (
        "She sold 48/2 = <<48/2=24>>",
        "corrected",
    )
    assert close_annotation("So 3+4 = <<3+4=7") == ("So 3+4 = <<3+4=7>>", "computed")
    # Unsafe or malformed: the text stays as the model wrote it.
    assert close_annotation("<<x*2=4") == ("<<x*2=4>>", "rejected")


class ScriptedEngine:
    """Replies in turn, each ending with its stop reason; records the prompts."""

    def __init__(self, replies: Sequence[tuple[str, str | None, int]]) -> None:
        self.replies = list(replies)
        self.prompts: list[str] = []
        self.stops: list[list[str]] = []

    async def __call__(self, prompt: str, max_tokens: int, stop: Sequence[str]) -> Completion:
        self.prompts.append(prompt)
        self.stops.append(list(stop))
        text, stop_reason, tokens = self.replies.pop(0)
        return Completion(text, 10 + len(prompt), tokens, "stop", stop_reason=stop_reason)


async def test_loop_computes_and_generation_goes_on_after_the_value() -> None:
    engine = ScriptedEngine(
        [
            ("She sold 48/2 = <<48/2=25", CLOSE, 8),
            ("24 clips.", "\n", 3),
        ]
    )
    run = await generate_with_calculator(engine, "P:", max_tokens=50, stop=["\n"])
    assert run.completion.text == "She sold 48/2 = <<48/2=24>>24 clips."
    assert run.outcomes == ["corrected"]
    # The second call continues from the corrected value.
    assert engine.prompts[1] == "P:She sold 48/2 = <<48/2=24>>"
    assert engine.stops[0] == ["\n", CLOSE]
    assert run.completion.completion_tokens == 11
    assert run.completion.prompt_tokens == 12  # the first call's prompt


async def test_loop_leaves_unsafe_expressions_and_finishes() -> None:
    engine = ScriptedEngine([("Then <<a*b=6", CLOSE, 5), ("6 apples.", None, 2)])
    run = await generate_with_calculator(engine, "P:", max_tokens=50, stop=[])
    assert run.completion.text == "Then <<a*b=6>>6 apples."
    assert run.outcomes == ["rejected"]


async def test_loop_without_annotations_is_one_call() -> None:
    engine = ScriptedEngine([("The answer is 18.", "\n", 6)])
    run = await generate_with_calculator(engine, "P:", max_tokens=50, stop=["\n"])
    assert run.completion.text == "The answer is 18."
    assert run.outcomes == []
    assert len(engine.prompts) == 1


async def test_loop_respects_the_token_budget() -> None:
    engine = ScriptedEngine([("<<1+1=2", CLOSE, 30), ("<<2+2=4", CLOSE, 30)])
    run = await generate_with_calculator(engine, "P:", max_tokens=40, stop=[])
    assert run.completion.finish_reason == "length"
    assert len(engine.prompts) == 2
