"""The solver role: its Protocol and registry."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

import httpx

from service.completion import Completion
from service.settings import Settings


class Solver(Protocol):
    """Answers chat messages; one call per subquestion or final answer."""

    model_name: str

    async def chat(
        self, messages: Sequence[dict[str, str]], *, request_id: str, stage: str
    ) -> Completion: ...


SolverFactory = Callable[[Settings, httpx.AsyncClient], Solver]
_REGISTRY: dict[str, SolverFactory] = {}
F = TypeVar("F", bound=SolverFactory)


def register(name: str) -> Callable[[F], F]:
    def deco(factory: F) -> F:
        _REGISTRY[name] = factory
        return factory

    return deco


def build_solver(settings: Settings, http: httpx.AsyncClient) -> Solver:
    try:
        factory = _REGISTRY[settings.solver.backend]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise ValueError(
            f"unknown solver backend {settings.solver.backend!r}; known: {known}"
        ) from None
    return factory(settings, http)
