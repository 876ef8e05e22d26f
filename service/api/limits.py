"""Per-key limits at the API: admission in the route, settlement when the request ends.

``admit(request, plan)`` runs for every pipeline request (``/solve``,
``/decompose``, the facade's pipeline models, through ``solving.plan_request``)
once the plan is resolved and the service is ready, before any model call, so
a 429 costs nothing. ``SpendMiddleware`` (pure ASGI) opens the request's
``Spend`` (the pipeline charges each model call to it) and, when the response
has ended, however it ended, settles the admission ticket with what the
request really spent.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.request_record import record, record_of
from service.api.state import Services
from service.core.spend import Spend, spend_scope
from service.pipeline.plan import Plan
from service.tenancy.reserve import reserve_tokens


async def admit(request: Request, services: Services, plan: Plan) -> None:
    """Count this request against its key's limits (429, or 503 by policy, past them)."""
    rec = record_of(request)
    if rec.api_key is None or rec.limits_ticket is not None:
        return
    tokens = reserve_tokens(plan, services.settings)
    rec.limits_ticket = await services.limiter.admit(rec.api_key, tokens)


class SpendMiddleware:
    """Each HTTP request's spend, and its admission ticket settled at the end."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # Settlements in flight: a client that leaves does not cancel its own.
        self._settling: set[asyncio.Task[None]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        spend = Spend()
        try:
            with spend_scope(spend):
                await self.app(scope, receive, send)
        finally:
            ticket = record(scope).limits_ticket
            if ticket is not None:
                services: Services = scope["app"].state.services
                task = asyncio.create_task(services.limiter.settle(ticket, spend))
                self._settling.add(task)
                task.add_done_callback(self._settling.discard)
                await asyncio.shield(task)
