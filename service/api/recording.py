"""The ledger's middleware: one row per API request, whatever it came to.

It wraps the same requests the access log does (``/solve``, ``/decompose``,
the pipeline facade), 401s, 413s, 422s and 429s included, and reads what
the handlers left in the request's record (``service.api.request_record``):
``result`` (the response model), ``plan`` (for the content columns),
``mode``, ``endpoint``, ``status``, and the caller's key name
(``service.api.caller``). Building the row and putting
it on the writer's queue is all that happens on the request path.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.caller import key_name
from service.api.middleware import endpoint_of
from service.api.request_record import RequestRecord, StatusLine, record
from service.core.schemas import DecomposeResponse, SolveResponse, StageUsage
from service.ledger import LedgerRow, LedgerWriter
from service.ledger.rows import subquestions_json


class LedgerMiddleware:
    def __init__(
        self, app: ASGIApp, writer: Callable[[], LedgerWriter | None], content: bool
    ) -> None:
        self.app = app
        self.writer = writer
        self.content = content

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = endpoint_of(scope)
        writer = self.writer() if endpoint is not None else None
        if writer is None:
            await self.app(scope, receive, send)
            return
        line = StatusLine(send)
        ts, started = time.time(), time.perf_counter()
        try:
            await self.app(scope, receive, line.send)
        finally:
            rec = record(scope)
            name = endpoint or rec.endpoint
            if name:
                latency_ms = (time.perf_counter() - started) * 1000.0
                writer.record(self.row(rec, key_name(scope), name, line.final(rec), ts, latency_ms))

    def row(
        self,
        rec: RequestRecord,
        key: str,
        endpoint: str,
        status: int,
        ts: float,
        latency_ms: float,
    ) -> LedgerRow:
        base: dict[str, Any] = {
            "request_id": rec.request_id,
            "ts": ts,
            "key_name": key,
            "endpoint": endpoint,
            "mode": rec.mode,
            "status": status,
            "latency_ms": latency_ms,
        }
        result, plan = rec.result, rec.plan
        if self.content and plan is not None:
            base["question"], base["context"] = plan.question, plan.context
        if isinstance(result, SolveResponse):
            return LedgerRow(**base, **_solve_fields(result, self.content))
        if isinstance(result, DecomposeResponse):
            d = result.usage.decomposer
            extra: dict[str, Any] = {}
            if self.content:
                extra["subquestions"] = subquestions_json([(q, "") for q in result.subquestions])
            return LedgerRow(
                **base,
                **_stage_fields("decomposer", d),
                adapter=d.adapter,
                cost_usd=d.cost_usd,
                cache_hits=d.cached_calls,
                **extra,
            )
        return LedgerRow(**base)


# A stage's ledger columns, ``{role}_{column}``, and the usage field each holds.
_STAGE_COLUMNS = {
    "calls": "calls",
    "prompt_tokens": "prompt_tokens",
    "completion_tokens": "completion_tokens",
    "ms": "latency_ms",
    "model": "model",
    "cost_usd": "cost_usd",
}


def _stage_fields(role: str, usage: StageUsage) -> dict[str, Any]:
    """The decomposer's or the solver's columns."""
    return {f"{role}_{column}": getattr(usage, name) for column, name in _STAGE_COLUMNS.items()}


def _solve_fields(result: SolveResponse, content: bool) -> dict[str, Any]:
    d, s = result.usage.decomposer, result.usage.solver
    fields: dict[str, Any] = {
        **_stage_fields("decomposer", d),
        **_stage_fields("solver", s),
        # A mode that ran no decomposer (direct) names none.
        "decomposer_model": d.model if d.calls or d.cached_calls else None,
        "adapter": d.adapter,
        "answered_by": ",".join(s.answered_by) or None,
        "cost_usd": result.usage.total.cost_usd,
        "cache_hits": d.cached_calls + s.cached_calls,
        "cached": result.cached,
    }
    if content:
        fields["subquestions"] = subquestions_json(
            [(q.question, q.answer) for q in result.subquestions]
        )
        fields["answer"] = result.answer_text
    return fields
