"""Solver backends: a Protocol, a name-to-class registry and a factory.

A new solver is one module here with a class decorated ``@register("name")``;
a profile selects it with ``DIVCONQ_SOLVER__BACKEND=name`` (or
``DIVCONQ_SOLVERS__<PROFILE>__BACKEND``). ``build_solvers`` wraps each
profile in retries and concurrency limits and chains its fallbacks.
"""

from __future__ import annotations

from typing import Any

from service.core.settings import Settings, SolverSettings
from service.observability.metrics import Metrics
from service.solver.base import Solver, SolverDeps, build_backend, register, registered
from service.solver.resilient import ResilientSolver, SolverChain

# Importing the modules registers their backends.
from service.solver import anthropic_messages, azure_openai, embedded, openai_chat  # noqa: F401  isort: skip


def sampling_identity(settings: Settings, profile: SolverSettings) -> dict[str, Any]:
    """Everything about a profile that changes its answer to the same messages: the
    response cache's key for one solver call (with the messages)."""
    return {
        "backend": profile.backend,
        "url": profile.base_url.rstrip("/") if profile.base_url else None,
        "model": settings.solver_model(profile),
        "api_version": profile.api_version,
        "max_tokens": settings.solver_tokens(profile),
        "temperature": profile.temperature,
        "stop": settings.solver_stop(profile),
    }


def build_solvers(settings: Settings, deps: SolverDeps, metrics: Metrics) -> dict[str, SolverChain]:
    profiles = settings.solver_profiles
    resilient = {
        name: ResilientSolver(
            name,
            build_backend(name, p, settings, deps),
            p,
            metrics,
            identity=sampling_identity(settings, p),
        )
        for name, p in profiles.items()
    }
    return {
        name: SolverChain([resilient[name], *(resilient[f] for f in p.fallbacks)])
        for name, p in profiles.items()
    }


__all__ = [
    "Solver",
    "SolverChain",
    "SolverDeps",
    "build_solvers",
    "register",
    "registered",
    "sampling_identity",
]
