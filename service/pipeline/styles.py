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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from service.core.settings import PromptStyleName
from service.pipeline import prompts
from service.pipeline.prompts import Messages

History = Sequence[tuple[str, str]]


class PromptStyle(Protocol):
    """The messages of each solver call the modes make."""

    @property
    def name(self) -> PromptStyleName: ...

    def subquestion(
        self, question: str, sub: str, history: History, context: str | None
    ) -> Messages:
        """One subquestion, after the Q/A so far (static, socratic)."""
        ...

    def final(self, question: str, history: History, context: str | None) -> Messages:
        """The final answer after the Q/A (static, socratic)."""
        ...

    def hinted(self, question: str, subquestions: Sequence[str], context: str | None) -> Messages:
        """The whole problem in one call, the subquestions as hints (hinted)."""
        ...

    def direct(self, question: str, context: str | None) -> Messages:
        """The whole problem in one call, no subquestions (direct)."""
        ...


@dataclass(frozen=True)
class ChatStyle:
    name: PromptStyleName = "chat"

    def subquestion(
        self, question: str, sub: str, history: History, context: str | None
    ) -> Messages:
        return prompts.subquestion(question, sub, history, context)

    def final(self, question: str, history: History, context: str | None) -> Messages:
        return prompts.final(question, history, context)

    def hinted(self, question: str, subquestions: Sequence[str], context: str | None) -> Messages:
        return prompts.hinted(question, subquestions, context)

    def direct(self, question: str, context: str | None) -> Messages:
        return prompts.direct(question, context)


@dataclass(frozen=True)
class DistilledStyle:
    name: PromptStyleName = "distilled"

    def subquestion(
        self, question: str, sub: str, history: History, context: str | None
    ) -> Messages:
        return prompts.distilled_subquestion(question, sub, history, context)

    def final(self, question: str, history: History, context: str | None) -> Messages:
        return prompts.distilled_final(question, history, context)

    def hinted(self, question: str, subquestions: Sequence[str], context: str | None) -> Messages:
        return prompts.distilled_hinted(question, subquestions, context)

    def direct(self, question: str, context: str | None) -> Messages:
        return prompts.distilled_direct(question, context)


CHAT = ChatStyle()
DISTILLED = DistilledStyle()
STYLES: dict[PromptStyleName, PromptStyle] = {"chat": CHAT, "distilled": DISTILLED}
