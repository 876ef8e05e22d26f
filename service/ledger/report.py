"""Reading the ledger back: time ranges, and the rows of a usage report as JSON."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from service.ledger.rows import UsageRow

DEFAULT_DAYS = 30


def parse_time(text: str) -> float:
    """An ISO date (``2026-12-01``, UTC midnight) or date-time (naive = UTC) as epoch seconds."""
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO date or date-time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def time_range(since: str | None, until: str | None, now: float) -> tuple[float, float]:
    """[since, until): defaults the last 30 days up to now (and a second past it)."""
    end = parse_time(until) if until else now + 1.0
    start = parse_time(since) if since else end - DEFAULT_DAYS * 86400.0
    if start >= end:
        raise ValueError("since must be before until")
    return start, end


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()


def as_json(rows: list[UsageRow]) -> list[dict[str, Any]]:
    return [{**dataclasses.asdict(r), "cost_usd": round(r.cost_usd, 10)} for r in rows]
