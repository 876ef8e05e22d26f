"""The solver role: its Protocol, registry, and the per-profile factory."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import httpx2

from service.core.completion import ChatCall, Completion
from service.core.registry import Registry
from service.core.settings import Settings, SolverSettings
from service.embedded.chat import EmbeddedChat


class Solver(Protocol):
    """Answers chat messages; one call per subquestion or final answer."""

    model_name: str

    async def chat(self, call: ChatCall) -> Completion:
        """One chat completion (streamed where ``call.on_text`` asks and the backend can);
        failures are ``service.core.errors.UpstreamError`` subclasses."""
        ...


@dataclass(frozen=True)
class SolverDeps:
    """What backends share, owned by the app's lifespan."""

    # The pooled client of every remote call.
    http: httpx2.AsyncClient
    # The in-process model's chat replies (None where no engine runs here).
    embedded: EmbeddedChat | None = None


# (profile name, profile, all settings, what backends share) -> backend
SolverFactory = Callable[[str, SolverSettings, Settings, SolverDeps], Solver]
_BACKENDS: Registry[SolverFactory] = Registry("solver")
F = TypeVar("F", bound=SolverFactory)


def register(name: str) -> Callable[[F], F]:
    """Files a backend: a profile's ``backend=name`` selects it."""
    return _BACKENDS.register(name)


def registered() -> list[str]:
    return _BACKENDS.names()


def build_backend(
    name: str, profile: SolverSettings, settings: Settings, deps: SolverDeps
) -> Solver:
    factory = _BACKENDS.get(profile.backend, where=f"solver profile {name!r}: ")
    return factory(name, profile, settings, deps)


def call_timeout(profile: SolverSettings) -> httpx2.Timeout:
    """Per-call timeouts of a profile; waiting for a pooled connection counts as connecting."""
    return httpx2.Timeout(
        profile.read_timeout_s, connect=profile.connect_timeout_s, pool=profile.connect_timeout_s
    )


def split_system(messages: Sequence[dict[str, str]]) -> tuple[str, list[dict[str, str]]]:
    """(system prompt, the other messages): APIs like Anthropic's take them apart."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    return system, [m for m in messages if m["role"] != "system"]
