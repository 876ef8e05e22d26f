"""``embedded`` solver: the in-process model, called directly, the calculator in the loop.

The default profile's backend. It answers through ``EmbeddedChat``
(``service/embedded/chat.py``), the same code that serves the raw model at
``/v1``, so a reply is the same either way; but no HTTP, no middleware and
no API key sit between the pipeline and the engine. Like any other backend it
is wrapped in the profile's concurrency limit, retries and fallbacks
(``service/solver/resilient.py``) and counted in the same metrics.
"""

from __future__ import annotations

import dataclasses
import itertools

from service.core.completion import ChatCall, Completion
from service.core.errors import NotReady
from service.core.settings import Settings, SolverSettings
from service.embedded.chat import EmbeddedChat, Sampling
from service.solver.base import SolverDeps, register


@register("embedded")
class EmbeddedSolver:
    def __init__(
        self, name: str, profile: SolverSettings, settings: Settings, deps: SolverDeps
    ) -> None:
        # None in a process with no engine (a CLI that builds every profile
        # for the one remote teacher it calls).
        self._chat: EmbeddedChat | None = deps.embedded
        self.model_name = settings.solver_model(profile)
        self._sampling = Sampling(
            max_tokens=settings.solver_tokens(profile),
            temperature=profile.temperature,
            stop=settings.solver_stop(profile),
        )
        # vLLM wants an id per generation; a request makes several solver calls.
        self._calls = itertools.count(1)

    async def chat(self, call: ChatCall) -> Completion:
        if self._chat is None:
            raise NotReady("the embedded solver has no engine in this process")
        numbered = dataclasses.replace(call, request_id=f"{call.request_id}-s{next(self._calls)}")
        return await self._chat.reply(numbered, self._sampling)
