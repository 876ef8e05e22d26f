"""The decomposer role: its Protocol and registry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

import httpx2

from service.core.completion import Completion, PromptCall
from service.core.registry import Registry
from service.core.settings import Settings


class Decomposer(Protocol):
    """Writes subquestions from a completion prompt."""

    model_name: str

    @property
    def ready(self) -> bool: ...

    @property
    def state(self) -> str:
        """'loading', 'ready' or 'failed: <reason>' for /readyz."""
        ...

    async def start(self) -> None:
        """Load or connect; may take minutes (model preparation, engine start)."""

    async def complete(self, call: PromptCall) -> Completion:
        """One completion; ``call.adapter`` names a LoRA adapter (None = base model)."""
        ...

    async def aclose(self) -> None: ...


DecomposerFactory = Callable[[Settings, httpx2.AsyncClient], Decomposer]
_BACKENDS: Registry[DecomposerFactory] = Registry("decomposer")
F = TypeVar("F", bound=DecomposerFactory)


def register(name: str) -> Callable[[F], F]:
    """Files a backend: ``DIVCONQ_DECOMPOSER__BACKEND=name`` selects it."""
    return _BACKENDS.register(name)


def build_decomposer(settings: Settings, http: httpx2.AsyncClient) -> Decomposer:
    return _BACKENDS.get(settings.decomposer.backend)(settings, http)
