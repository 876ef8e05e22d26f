"""What a model backend is asked (one call object) and returns (text plus its token counts).

Each role's backends take one frozen call object rather than a list of
keyword arguments, so the Protocol and every backend name it once:
``PromptCall`` for the decomposer, ``ChatCall`` for the solver.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

# Receives a reply's text as it is written, one piece at a time (a streamed
# call); the pieces add up to the completion's text. Called synchronously: it
# must not block (a stream puts the piece on a queue).
TextSink = Callable[[str], None]


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "stop"
    # The stop string that ended the text, when one did (the engine reports it).
    stop_reason: str | None = None
    # Which solver profile and model answered (a fallback may have).
    profile: str = ""
    model: str = ""
    # False when the backend reported no usage: the tokens are 0 here, and the
    # pipeline estimates them with a tokenizer (``service.pipeline.token_estimate``).
    usage_reported: bool = True
    # Served from the response cache: no model ran, nothing was spent.
    cached: bool = False


@dataclass(frozen=True)
class PromptCall:
    """One decomposer call: a completion prompt and where it stops."""

    prompt: str
    max_tokens: int
    stop: Sequence[str]
    request_id: str
    # A LoRA adapter's name (None = the base model).
    adapter: str | None = None


@dataclass(frozen=True)
class ChatCall:
    """One solver call: the chat messages, and where its text goes as it is written.

    With ``on_text``, a backend that can stream passes the reply's text on as
    it is written (the pieces add up to the completion's text); one that
    cannot ignores it. Usage is the same either way.
    """

    messages: Sequence[dict[str, str]]
    request_id: str
    on_text: TextSink | None = None
    # The pipeline stage the call serves (solve, final), for its span; None outside one.
    stage: str | None = None
