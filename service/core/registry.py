"""Backends of one role by name: what ``@register("name")`` fills and a setting selects.

The decomposer and the solver each keep one ``Registry`` of their backends'
factories (``service/decomposer/base.py``, ``service/solver/base.py``); a new
backend is one module whose factory (a class, usually) is decorated with the
role's ``register``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar, cast

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., object])


class Registry(Generic[T]):
    """Factories of type ``T``, by the name a setting selects them with."""

    def __init__(self, role: str) -> None:
        self.role = role
        self._factories: dict[str, T] = {}

    def register(self, name: str) -> Callable[[F], F]:
        """A decorator that files a factory under ``name``.

        Typed loosely here; each role's own ``register`` narrows ``F`` to its
        factory type, so mypy checks every backend against it."""

        def deco(factory: F) -> F:
            self._factories[name] = cast(T, factory)
            return factory

        return deco

    def names(self) -> list[str]:
        return sorted(self._factories)

    def get(self, name: str, where: str = "") -> T:
        """The factory called ``name``; ``ValueError`` naming the known ones otherwise.

        ``where`` prefixes the message (the setting that named it)."""
        try:
            return self._factories[name]
        except KeyError:
            known = ", ".join(self.names())
            raise ValueError(
                f"{where}unknown {self.role} backend {name!r}; known: {known}"
            ) from None
