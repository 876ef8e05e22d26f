"""Solver backends: a Protocol, a name-to-class registry and a factory.

A new solver is one module here with a class decorated ``@register("name")``;
``DIVCONQ_SOLVER__BACKEND=name`` selects it.
"""

from __future__ import annotations

from service.solver.base import Solver, build_solver, register

# Importing the modules registers their backends.
from service.solver import openai_chat  # noqa: F401  isort: skip

__all__ = ["Solver", "build_solver", "register"]
