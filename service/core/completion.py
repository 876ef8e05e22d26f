"""What every model backend returns: text plus the backend's own token counts."""

from __future__ import annotations

from collections.abc import Callable
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
