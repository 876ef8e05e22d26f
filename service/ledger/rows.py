"""One ledger row: what is recorded of one API request, and the usage report's shape."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any, Literal

GroupBy = Literal["key", "day", "mode"]
GROUPS: tuple[GroupBy, ...] = ("key", "day", "mode")


@dataclass(frozen=True)
class LedgerRow:
    """Counts, times, models and costs always; content only where the setting allows."""

    request_id: str
    ts: float  # seconds since the epoch (UTC) when the request arrived
    key_name: str
    endpoint: str
    mode: str | None
    status: int
    latency_ms: float
    decomposer_calls: int = 0
    decomposer_prompt_tokens: int = 0
    decomposer_completion_tokens: int = 0
    decomposer_ms: float = 0.0
    decomposer_model: str | None = None
    decomposer_cost_usd: float = 0.0
    adapter: str | None = None
    solver_calls: int = 0
    solver_prompt_tokens: int = 0
    solver_completion_tokens: int = 0
    solver_ms: float = 0.0
    solver_model: str | None = None
    solver_cost_usd: float = 0.0
    answered_by: str | None = None  # the solver profiles that answered, comma-separated
    cost_usd: float = 0.0
    cache_hits: int = 0  # model calls answered from the response cache
    cached: bool = False  # the whole answer came from the cache
    # Content: only with DIVCONQ_LEDGER__CONTENT=true.
    question: str | None = None
    context: str | None = None
    subquestions: str | None = None  # JSON: [{"question", "answer"}, ...]
    answer: str | None = None


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(LedgerRow))


def values(row: LedgerRow) -> tuple[Any, ...]:
    return tuple(getattr(row, c) for c in COLUMNS)


def subquestions_json(pairs: list[tuple[str, str]]) -> str:
    return json.dumps([{"question": q, "answer": a} for q, a in pairs], ensure_ascii=False)


@dataclass(frozen=True)
class UsageRow:
    """One group of the usage report (``GET /v1/usage``, ``divconq usage``)."""

    group: str
    requests: int
    errors: int  # status >= 400
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    cache_hits: int
