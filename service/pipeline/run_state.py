"""One request's running state in the pipeline: its plan, its accounts, its events.

``Run`` is what ``service.pipeline.modes.Pipeline`` threads through a request: the
plan, the decomposer's and the solver's ``Stage`` (usage and busy clock), and
the optional ``EventSink`` a streamed request reads its progress from.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from pydantic import BaseModel

from service.core.schemas import AnswerDeltaEvent, StageUsage
from service.pipeline.plan import Plan

# Receives progress as it happens: (event name, its data). Called synchronously;
# it must not block (the streaming route puts the event on a queue).
EventSink = Callable[[str, BaseModel], None]


class AnswerStream:
    """The final answer's text as ``answer_delta`` events while the solver writes it.

    The response's ``answer_text`` is the reply stripped of leading and trailing
    whitespace, so leading whitespace is dropped and trailing whitespace waits
    until more text follows it: the pieces add up to ``answer_text`` exactly.
    ``finish`` sends what was not streamed (all of it, when the answer came
    from the cache or a backend that does not stream).
    """

    def __init__(self, run: Run) -> None:
        self._run = run
        self._raw = ""
        self._sent = ""

    def write(self, piece: str) -> None:
        self._raw += piece
        self._send(self._raw.strip())

    def finish(self, answer_text: str) -> None:
        if answer_text.startswith(self._sent):
            self._send(answer_text)

    def _send(self, text: str) -> None:
        if len(text) > len(self._sent) and text.startswith(self._sent):
            piece, self._sent = text[len(self._sent) :], text
            self._run.emit("answer_delta", AnswerDeltaEvent(text=piece))


class BusyClock:
    """A stage's latency: the wall time during which at least one of its calls ran.

    Sequential calls add up; calls that overlap (a wave of independent
    subquestions) count once, for as long as any of them is running.
    """

    def __init__(self, usage: StageUsage) -> None:
        self._usage = usage
        self._running = 0
        self._since = 0.0

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        if self._running == 0:
            self._since = time.perf_counter()
        self._running += 1
        try:
            yield
        finally:
            self._running -= 1
            if self._running == 0:
                self._usage.latency_ms += (time.perf_counter() - self._since) * 1000.0


@dataclass
class Stage:
    """One role's running account in a request: its usage and its clock."""

    role: str
    usage: StageUsage
    clock: BusyClock = field(init=False)

    def __post_init__(self) -> None:
        self.clock = BusyClock(self.usage)


@dataclass
class Run:
    """One request's state: its id, its plan and running accounts."""

    request_id: str
    plan: Plan
    decomposer: Stage
    solver: Stage
    started: float = field(default_factory=time.perf_counter)
    decomposer_calls: int = 0
    repeats_dropped: int = 0
    events: EventSink | None = None

    def emit(self, name: str, data: BaseModel) -> None:
        if self.events is not None:
            self.events(name, data)

    @property
    def question(self) -> str:
        return self.plan.question

    @property
    def context(self) -> str | None:
        return self.plan.context

    def next_decomposer_id(self) -> str:
        # vLLM needs unique ids per generation; socratic makes several.
        self.decomposer_calls += 1
        return f"{self.request_id}-d{self.decomposer_calls}"

    @property
    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000.0
