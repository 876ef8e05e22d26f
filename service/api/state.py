"""What the lifespan owns for the app's lifetime, and how routes reach it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import httpx2
from starlette.requests import Request

from service.cache import ResponseCache
from service.core.errors import NotReady
from service.core.settings import Settings
from service.decomposer import Decomposer
from service.decomposer.adapters import Adapters
from service.embedded.chat import EmbeddedChat
from service.embedded.engine import EmbeddedEngine
from service.ledger import LedgerWriter
from service.observability.metrics import Metrics
from service.pipeline.budget import Budget
from service.pipeline.modes import Pipeline
from service.pipeline.plan import Plan
from service.solver import SolverChain
from service.tenancy.limiter import Limiter


@dataclass
class Services:
    settings: Settings
    http: httpx2.AsyncClient
    decomposer: Decomposer
    # The in-process model's chat replies: the embedded solver and the raw /v1 model.
    embedded: EmbeddedChat
    adapters: Adapters
    solvers: dict[str, SolverChain]
    pipeline: Pipeline
    metrics: Metrics
    cache: ResponseCache
    # Per-key limits (service/tenancy), counted in process or in Redis.
    limiter: Limiter
    # Whether a request's prompts fit the models' windows (checked before any call).
    budget: Budget
    ledger: LedgerWriter | None = None

    @property
    def engine(self) -> EmbeddedEngine | None:
        """The in-process engine, when the decomposer backend has one."""
        engine = getattr(self.decomposer, "engine", None)
        return engine if isinstance(engine, EmbeddedEngine) else None

    def require_ready(self, plan: Plan) -> None:
        """503 unless everything this plan touches is loaded."""
        if plan.needs_decomposer and not self.decomposer.ready:
            raise NotReady(
                f"decomposer not ready ({self.decomposer.state})", headers={"Retry-After": "10"}
            )


def get_services(request: Request) -> Services:
    return cast(Services, request.app.state.services)
