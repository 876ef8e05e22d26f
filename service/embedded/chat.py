"""Chat replies from the in-process engine, the calculator in the loop.

The one way the embedded model answers chat messages: the ``embedded`` solver
(``service/solver/embedded.py``) calls it with its profile's sampling, the
raw model at ``/v1/chat/completions`` with the request's. Both therefore
render the same template, stop at the same turn end, and compute the same
``<<expression=value>>`` annotations (``service/embedded/calculator.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from service.core.completion import ChatCall, Completion, TextSink
from service.core.errors import NotReady
from service.embedded.calculator import CLOSE, OPEN, generate_with_calculator
from service.embedded.engine import ENGINE_DEAD, Generation

log = logging.getLogger(__name__)

# Gemma's template knows system, user and assistant turns.
_ROLES = {"developer": "system", "tool": "user"}


class ChatEngine(Protocol):
    """What a chat reply needs of the engine (``EmbeddedEngine``; tests fake it)."""

    served_name: str

    @property
    def ready(self) -> bool: ...

    @property
    def dead(self) -> bool: ...

    @property
    def turn_end_ids(self) -> list[int]: ...

    def render_chat(self, messages: Sequence[dict[str, str]]) -> str: ...

    def count_tokens(self, prompt: str) -> int: ...

    async def generate(self, gen: Generation) -> Completion: ...


@dataclass(frozen=True)
class Sampling:
    """One reply's sampling: a solver profile's, or a /v1 request's."""

    max_tokens: int
    temperature: float
    stop: Sequence[str]


class EmbeddedChat:
    """Chat replies from the engine ``engine()`` returns (None while it loads)."""

    def __init__(
        self,
        engine: Callable[[], ChatEngine | None],
        *,
        calculator: bool,
        count: Callable[[str], None],
    ) -> None:
        self._engine = engine
        self._calculator = calculator
        # Counts each calculator outcome (computed, corrected, rejected).
        self._count = count

    def engine(self) -> ChatEngine:
        """The loaded engine; 503 while it loads or after it died."""
        engine = self._engine()
        if engine is not None and engine.dead:
            raise NotReady(ENGINE_DEAD)
        if engine is None or not engine.ready:
            raise NotReady("embedded model not loaded yet", headers={"Retry-After": "10"})
        return engine

    @property
    def model_name(self) -> str | None:
        engine = self._engine()
        return engine.served_name if engine is not None else None

    def _prompt(self, engine: ChatEngine, messages: Sequence[dict[str, str]]) -> str:
        return engine.render_chat(
            [{"role": _ROLES.get(m["role"], m["role"]), "content": m["content"]} for m in messages]
        )

    def prompt_tokens(self, messages: Sequence[dict[str, str]]) -> int:
        """The tokens ``messages`` take as the prompt ``reply`` sends (503 while loading)."""
        engine = self.engine()
        return engine.count_tokens(self._prompt(engine, messages))

    async def reply(self, call: ChatCall, sampling: Sampling) -> Completion:
        """One reply; with the calculator on, every annotation it closes is computed.

        ``call.request_id`` must be unique per reply (vLLM's rule); the
        calculator's later engine calls add a suffix to it. ``call.on_text``
        gets the reply as it is written, less what the calculator may still
        rewrite (``Holdback``).
        """
        engine = self.engine()
        prompt = self._prompt(engine, call.messages)
        request_id = call.request_id
        calls = 0
        holdback = Holdback(call.on_text) if call.on_text is not None else None

        async def generate(text: str, budget: int, stops: Sequence[str]) -> Completion:
            nonlocal calls
            calls += 1
            # The reply so far: the calculator asks again with it after the prompt.
            before = text[len(prompt) :]
            written: list[str] = []

            def piece(delta: str) -> None:
                assert holdback is not None
                written.append(delta)
                holdback.offer(before + "".join(written))

            # An input the engine refuses is an InvalidRequest already (engine.py).
            return await engine.generate(
                Generation(
                    text,
                    request_id=request_id if calls == 1 else f"{request_id}-{calls}",
                    max_tokens=budget,
                    temperature=sampling.temperature,
                    stop=stops,
                    # A chat reply ends with its turn.
                    stop_token_ids=engine.turn_end_ids,
                    on_text=piece if holdback is not None else None,
                )
            )

        if not self._calculator:
            completion = await generate(prompt, sampling.max_tokens, sampling.stop)
        else:
            run = await generate_with_calculator(
                generate, prompt, max_tokens=sampling.max_tokens, stop=sampling.stop
            )
            for outcome in run.outcomes:
                self._count(outcome)
            completion = run.completion
        if holdback is not None:
            holdback.offer(completion.text, final=True)
        return Completion(
            completion.text,
            completion.prompt_tokens,
            completion.completion_tokens,
            completion.finish_reason,
            model=engine.served_name,
        )


class Holdback:
    """Passes a reply on as it grows, holding back what the calculator may rewrite.

    The calculator rewrites only the annotation being closed, the text after
    the last ``<<`` that no ``>>`` follows, so that text (and a lone trailing
    ``<`` that may start one) waits until the annotation closes. Everything
    before it is final: what was passed on is always a prefix of the reply.
    """

    def __init__(self, on_text: TextSink) -> None:
        self._on_text = on_text
        self._sent = ""
        self._diverged = False

    def offer(self, text: str, *, final: bool = False) -> None:
        """``text`` is the whole reply so far (``final``: all of it)."""
        end = len(text)
        if not final:
            opened = text.rfind(OPEN)
            if opened != -1 and text.find(CLOSE, opened) == -1:
                end = opened
            elif text.endswith(OPEN[0]):
                end -= 1
        if self._diverged or end <= len(self._sent):
            return
        if not text.startswith(self._sent):
            # Never expected: the engine's text only grows. Send nothing more
            # rather than text that contradicts what the client holds.
            log.warning("streamed reply diverged from its text; not streaming the rest")
            self._diverged = True
            return
        piece, self._sent = text[len(self._sent) : end], text[:end]
        self._on_text(piece)
