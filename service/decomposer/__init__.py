"""Decomposer backends: a Protocol, a name-to-class registry and a factory.

A new backend is one module here that defines a class and decorates it with
``@register("name")``; ``DIVCONQ_DECOMPOSER__BACKEND=name`` selects it.
"""

from __future__ import annotations

from service.decomposer.base import Decomposer, build_decomposer, register

# Importing the modules registers their backends.
from service.decomposer import openai_http, vllm_inprocess  # noqa: F401  isort: skip

__all__ = ["Decomposer", "build_decomposer", "register"]
