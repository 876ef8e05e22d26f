"""One request's running spend (tokens, USD), readable anywhere below the route.

The admission middleware opens a ``Spend`` for each API request; the pipeline
charges every model call to it where it accounts the call
(``ModelCalls._call``), so a request that fails or is cancelled half-way still
has its real tokens and cost, and per-key limits settle from them. Asyncio
tasks copy the context, so calls made in a request's tasks charge it too.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class Spend:
    tokens: int = 0
    cost_usd: float = 0.0
    calls: int = 0

    def add(self, tokens: int, cost_usd: float) -> None:
        self.tokens += tokens
        self.cost_usd += cost_usd
        self.calls += 1


_current: contextvars.ContextVar[Spend | None] = contextvars.ContextVar("spend", default=None)


@contextmanager
def spend_scope(spend: Spend) -> Iterator[Spend]:
    token = _current.set(spend)
    try:
        yield spend
    finally:
        _current.reset(token)


def charge(tokens: int, cost_usd: float) -> None:
    """Charge one model call to the current request (no-op outside one)."""
    spend = _current.get()
    if spend is not None:
        spend.add(tokens, cost_usd)
