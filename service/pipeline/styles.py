"""Prompt styles: how a solver is asked, chosen once per solver when the plan is made.

A solver speaks one of two styles (``DIVCONQ_SOLVER__PROMPTS``, resolved by
``Settings.solver_prompts``):

- ``CHAT``: instructions for an instruction-tuned model (a hosted solver, or
  a model of your own in process): a system prompt, the problem, the Q/A so
  far, "End with a line of the form 'The answer is X.'".
- ``DISTILLED``: the multi-turn format the shipped distilled solver was
  trained on (``service/distill/socratic.py``): one worked GSM8K step per
  turn, no instructions. Its ``hinted`` is the whole-problem task it was
  trained on (``direct``: every step, then "The answer is N."), with the
  subquestions written under the problem as hints: the model was never
  shown the chat prompt's instructions, and given them it copies "The answer
  is X." word for word.

The pipeline (``service/pipeline/modes.py``) asks the plan's style for every
message it sends a solver and never branches on the style itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from service.core.settings import PromptStyleName
from service.pipeline import prompts
from service.pipeline.prompts import Messages

History = Sequence[tuple[str, str]]


@dataclass(frozen=True)
class PromptStyle:
    """The messages of each solver call the modes make: one prompt builder per call."""

    name: PromptStyleName
    # One subquestion, after the Q/A so far (static, socratic):
    # (question, subquestion, history, context) -> messages.
    subquestion: Callable[[str, str, History, str | None], Messages]
    # The final answer after the Q/A (static, socratic): (question, history, context).
    final: Callable[[str, History, str | None], Messages]
    # The whole problem in one call, the subquestions as hints (hinted).
    hinted: Callable[[str, Sequence[str], str | None], Messages]
    # The whole problem in one call, no subquestions (direct): (question, context).
    direct: Callable[[str, str | None], Messages]


CHAT = PromptStyle("chat", prompts.subquestion, prompts.final, prompts.hinted, prompts.direct)
DISTILLED = PromptStyle(
    "distilled",
    prompts.distilled_subquestion,
    prompts.distilled_final,
    prompts.distilled_hinted,
    prompts.distilled_direct,
)
STYLES: dict[PromptStyleName, PromptStyle] = {"chat": CHAT, "distilled": DISTILLED}
