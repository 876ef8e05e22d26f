"""One request, resolved in one place: what to run, with what, for how long.

``resolve(body, resources)`` turns a request body into a ``Plan``: the mode,
the subquestion cap, the solver chain (a profile and its fallbacks) and the
prompt style it is asked in, the decomposer adapter (or none) and the
deadline. It also rejects what no plan
can serve (422: limits, unknown solver or adapter, a deadline over the cap).
Routes call it once; the pipeline and the readiness check only read the plan,
so no default is re-derived anywhere else.

Another front end (an OpenAI-compatible facade, a streaming route) builds a
``SolveRequest`` from its own body and calls the same function.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from service.cache.keys import OFF, CachePolicy
from service.core.errors import InvalidRequest
from service.core.input_limits import InputLimits
from service.core.schemas import DecomposeRequest, SolveRequest
from service.core.settings import Mode, Settings
from service.decomposer.adapters import Adapters
from service.pipeline.styles import CHAT, STYLES, PromptStyle
from service.solver import SolverChain


class Resources(Protocol):
    """What resolving needs from the app (``service.api.state.Services`` has it)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def adapters(self) -> Adapters: ...
    @property
    def solvers(self) -> Mapping[str, SolverChain]: ...


# The distilled adapter writes static decompositions and socratic next
# subquestions (service/distill/socratic.py); direct makes no decomposer call.
ADAPTER_MODES: frozenset[Mode | None] = frozenset({"static", "hinted", "socratic", None})


@dataclass(frozen=True)
class Plan:
    """A validated request with every default settled.

    ``mode`` is None for ``/decompose`` (a decomposition, nothing solved), and
    then ``solver`` is None too.
    """

    question: str
    context: str | None
    mode: Mode | None
    cap: int
    adapter: str | None
    timeout_s: float
    solver: SolverChain | None = None
    # The chosen solver runs on the in-process engine (the embedded backend).
    solver_embedded: bool = False
    # How the chosen solver is asked (service/pipeline/styles.py).
    prompts: PromptStyle = CHAT
    # How this request may use the response cache (the route sets it).
    cache: CachePolicy = OFF

    @property
    def needs_decomposer(self) -> bool:
        """Whether this plan touches the decomposer's engine (for the 503 check)."""
        return self.mode != "direct" or self.solver_embedded


def resolve(body: DecomposeRequest, services: Resources) -> Plan:
    """The plan for a ``SolveRequest`` (``/solve``) or a ``DecomposeRequest`` (``/decompose``)."""
    settings = services.settings
    InputLimits.from_settings(settings).check(
        body.question, body.context, body.max_subquestions, body.timeout_s
    )
    adapter = services.adapters.pick(body.decomposer_adapter)
    timeout_s = body.timeout_s or settings.request_timeout_s
    mode: Mode | None = None
    solver: SolverChain | None = None
    embedded = False
    style: PromptStyle = CHAT
    if isinstance(body, SolveRequest):
        mode = body.mode or settings.default_mode
        name = body.solver or settings.default_solver
        if name not in services.solvers:
            raise InvalidRequest(
                f"unknown solver {name!r}; configured: {', '.join(sorted(services.solvers))}"
            )
        solver = services.solvers[name]
        profile = settings.solver_profiles[name]
        embedded = profile.embedded
        style = STYLES[settings.solver_prompts(profile)]
    return Plan(
        question=body.question,
        context=body.context,
        mode=mode,
        cap=body.max_subquestions or settings.max_subquestions,
        adapter=adapter if mode in ADAPTER_MODES else None,
        timeout_s=timeout_s,
        solver=solver,
        solver_embedded=embedded,
        prompts=style,
    )
