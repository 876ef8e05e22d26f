"""Solver backends: a Protocol, a name-to-class registry and a factory.

A new solver is one module here with a class decorated ``@register("name")``;
a profile selects it with ``DIVCONQ_SOLVER__BACKEND=name`` (or
``DIVCONQ_SOLVERS__<PROFILE>__BACKEND``). ``build_solvers`` wraps each
profile in retries and concurrency limits and chains its fallbacks.
"""

from __future__ import annotations

import httpx2

from service.core.settings import Settings
from service.observability.metrics import Metrics
from service.solver.base import Solver, build_backend, register, registered
from service.solver.resilient import ResilientSolver, SolverChain

# Importing the modules registers their backends.
from service.solver import anthropic_messages, azure_openai, openai_chat  # noqa: F401  isort: skip


def build_solvers(
    settings: Settings, http: httpx2.AsyncClient, metrics: Metrics
) -> dict[str, SolverChain]:
    profiles = settings.solver_profiles
    resilient = {
        name: ResilientSolver(name, build_backend(name, p, settings, http), p, metrics)
        for name, p in profiles.items()
    }
    return {
        name: SolverChain([resilient[name], *(resilient[f] for f in p.fallbacks)])
        for name, p in profiles.items()
    }


__all__ = ["Solver", "SolverChain", "build_solvers", "register", "registered"]
