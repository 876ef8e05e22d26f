"""Token budgets: whether a request's prompts, with their reserved output, fit the models.

Checked once per request, before any model call (``Budget.check``, awaited
by the routes before a response, streamed or not, begins): a request
that cannot fit gets 422 ``invalid_request`` naming the window in tokens and
the count, instead of a model error half-way through.

What is checked, per model whose context window is known:

- the decomposer (the in-process engine: ``DIVCONQ_DECOMPOSER__MAX_MODEL_LEN``):
  its first prompt, exactly as it will be sent (static or socratic), plus the
  output it reserves (``max_tokens`` or ``socratic_max_tokens``);
- the solver (the embedded one: the same window; a remote profile:
  ``context_tokens``, unset = not checked here, the remote server judges):
  in ``direct`` mode its one prompt exactly; in the other modes the final
  prompt with no subquestions yet, a lower bound on every solver prompt of
  the request (each carries the question and the context), plus the
  profile's ``max_tokens``.

Later prompts grow with the answers; one that then overflows is refused by
the model and answered 422 with its stage (``service/embedded/engine.py``,
``service/pipeline/modes.py``), never a 5xx.

Tokens are counted with the engine's own tokenizer where it runs here, else
with the usage tokenizer (``service/pipeline/token_estimate.py``): a remote
model's tokenizer is unknown, so its count is an estimate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from service.core.errors import InvalidRequest
from service.core.settings import Settings
from service.decomposer import Decomposer
from service.pipeline import prompts
from service.pipeline.plan import Plan
from service.pipeline.token_estimate import TokenEstimator


class _Engine(Protocol):
    """What counting needs of ``service.embedded.engine.EmbeddedEngine``."""

    @property
    def ready(self) -> bool: ...
    def count_tokens(self, prompt: str) -> int: ...
    def render_chat(self, messages: Sequence[dict[str, str]]) -> str: ...


@dataclass(frozen=True)
class Window:
    """A model's context window and the setting that states it."""

    tokens: int
    setting: str


def decomposer_window(settings: Settings) -> Window | None:
    if settings.decomposer.backend != "vllm":
        return None  # an HTTP decomposer's server judges its own inputs
    return Window(settings.decomposer.max_model_len, "DIVCONQ_DECOMPOSER__MAX_MODEL_LEN")


def solver_window(settings: Settings, profile_name: str) -> Window | None:
    profile = settings.solver_profiles[profile_name]
    env = (
        "DIVCONQ_SOLVER"
        if profile_name == "default"
        else f"DIVCONQ_SOLVERS__{profile_name.upper()}"
    )
    if profile.context_tokens is not None:
        return Window(profile.context_tokens, f"{env}__CONTEXT_TOKENS")
    if profile.embedded:  # the in-process model: the engine's window
        return decomposer_window(settings)
    return None


def refuse(role: str, prompt_tokens: int, reserved: int, window: Window, stage: str | None) -> None:
    """422 when ``prompt_tokens + reserved`` does not fit ``window`` (worded as OpenAI does)."""
    if prompt_tokens + reserved <= window.tokens:
        return
    raise InvalidRequest(
        f"the {role}'s context window is {window.tokens} tokens ({window.setting}); this "
        f"request needs {prompt_tokens + reserved}: {prompt_tokens} in the prompt and "
        f"{reserved} reserved for the output. Shorten the question or the context.",
        stage=stage,
    )


def _decomposer_prompt(plan: Plan, settings: Settings) -> tuple[str, int]:
    """The decomposer's first prompt and the output it reserves."""
    d = settings.decomposer
    if plan.mode == "socratic":
        ask = prompts.socratic_distilled if plan.adapter else prompts.socratic_next
        return ask(plan.question, [], plan.context), d.socratic_max_tokens
    build = prompts.distilled_decomposition if plan.adapter else prompts.static_decomposition
    return build(plan.question, plan.context), d.max_tokens


def _solver_prompt(plan: Plan) -> prompts.Messages:
    """The solver's one prompt (``direct``), else a lower bound on all of them."""
    if plan.mode == "direct":
        return plan.prompts.direct(plan.question, plan.context)
    return plan.prompts.final(plan.question, [], plan.context)


class Budget:
    """Checks plans against the models' windows; one per app (the lifespan builds it)."""

    def __init__(self, settings: Settings, decomposer: Decomposer, estimator: TokenEstimator):
        self._settings = settings
        self._decomposer = decomposer
        self._estimator = estimator

    def _engine(self) -> _Engine | None:
        """The in-process engine, once loaded: its tokenizer counts exactly."""
        engine: _Engine | None = getattr(self._decomposer, "engine", None)
        return engine if engine is not None and engine.ready else None

    async def _count_text(self, prompt: str) -> int:
        engine = self._engine()
        return engine.count_tokens(prompt) if engine else await self._estimator.text(prompt)

    async def _count_chat(self, messages: prompts.Messages, embedded: bool) -> int:
        engine = self._engine() if embedded else None
        if engine is None:
            return await self._estimator.chat(messages)
        return engine.count_tokens(engine.render_chat(messages))

    async def check(self, plan: Plan) -> None:
        """422 if a prompt of ``plan`` cannot fit its model with its reserved output."""
        settings = self._settings
        window = decomposer_window(settings)
        if plan.mode != "direct" and window is not None:
            prompt, reserved = _decomposer_prompt(plan, settings)
            tokens = await self._count_text(prompt)
            refuse("decomposer", tokens, reserved, window, "decompose")
        if plan.mode is None or plan.solver is None:
            return  # /decompose: no solver call
        window = solver_window(settings, plan.solver.name)
        if window is not None:
            messages = _solver_prompt(plan)
            reserved = settings.solver_tokens(settings.solver_profiles[plan.solver.name])
            tokens = await self._count_chat(messages, plan.solver_embedded)
            refuse(
                "solver", tokens, reserved, window, "final" if plan.mode == "direct" else "solve"
            )
