"""What the lifespan owns for the app's lifetime, and how routes reach it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import httpx2
from starlette.requests import Request

from service.decomposer import Decomposer
from service.engine import EmbeddedEngine
from service.errors import NotReady
from service.metrics import Metrics
from service.pipeline import Pipeline
from service.settings import Mode, Settings
from service.solver import SolverChain


@dataclass
class Services:
    settings: Settings
    http: httpx2.AsyncClient
    decomposer: Decomposer
    solvers: dict[str, SolverChain]
    pipeline: Pipeline
    metrics: Metrics

    @property
    def engine(self) -> EmbeddedEngine | None:
        """The in-process engine, when the decomposer backend has one."""
        engine = getattr(self.decomposer, "engine", None)
        return engine if isinstance(engine, EmbeddedEngine) else None

    def solver_is_embedded(self, profile: str | None = None) -> bool:
        name = profile or self.settings.default_solver
        return self.settings.solver_profiles[name].base_url is None

    def require_ready(self, mode: Mode | None, profile: str | None = None) -> None:
        """503 unless everything this mode touches is loaded."""
        needs_decomposer = mode != "direct" or self.solver_is_embedded(profile)
        if needs_decomposer and not self.decomposer.ready:
            raise NotReady(
                f"decomposer not ready ({self.decomposer.state})", headers={"Retry-After": "10"}
            )


def get_services(request: Request) -> Services:
    return cast(Services, request.app.state.services)
