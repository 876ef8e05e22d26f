"""The settings groups of the multi-tenant platform: the response cache, the
request ledger and the per-key limits (``DIVCONQ_CACHE__*``, ``DIVCONQ_LEDGER__*``,
``DIVCONQ_LIMITS__*``), nested in ``service.core.settings.Settings``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr


class CacheSettings(BaseModel):
    """The response cache (docs/ledger-and-cache.md)."""

    enabled: bool = Field(True, description="Cache deterministic answers at all.")
    url: SecretStr | None = Field(
        None,
        description="'memory' (a bounded LRU in this process) or a redis:// URL; unset = "
        "DIVCONQ_REDIS_URL when that is set (replicas share hits), else 'memory'.",
    )
    ttl_s: float = Field(86400.0, gt=0, description="Seconds an entry lives.")
    max_entries: int = Field(10000, ge=1, description="'memory' store: LRU bound.")
    shared: bool = Field(
        False,
        description="One namespace for every API key. Off (the default), each key only hits "
        "its own entries: no tenant can time another's questions.",
    )
    timeout_s: float = Field(0.5, gt=0, description="Redis: connect and read timeout.")


class LedgerSettings(BaseModel):
    """The request ledger: one row per API request (docs/ledger-and-cache.md)."""

    enabled: bool = Field(True, description="Record requests at all.")
    content: bool = Field(
        False,
        description="Also store the question, context, subquestions and answers (off: only "
        "counts, times, models and costs).",
    )
    retention_days: float = Field(
        90.0, ge=0, description="Rows older than this are deleted (hourly); 0 = keep forever."
    )
    queue_size: int = Field(
        10000, ge=1, description="Rows waiting to be written; past it rows are dropped, counted."
    )
    batch_size: int = Field(500, ge=1, description="Most rows written in one transaction.")
    flush_interval_s: float = Field(
        0.5, gt=0, description="Longest a row waits for its batch to fill before it is written."
    )


class LimitSettings(BaseModel):
    """Per-key limits (requests/tokens per minute, USD per day): where they are counted."""

    enabled: bool = Field(
        True, description="Enforce the limits of DIVCONQ_API_KEYS; false = count nothing."
    )
    on_store_error: Literal["allow", "deny"] = Field(
        "allow",
        description="When the limits store (Redis) cannot be reached during a request: "
        "'allow' admits it uncounted (an outage of the store is not an outage of the API; "
        "the in-flight cap still bounds load), 'deny' answers 503. Counted in "
        "divconq_limit_store_errors_total and shown in /readyz either way.",
    )
    store_timeout_s: float = Field(
        0.5, gt=0, description="Redis: connect and command timeout for one limits check."
    )
    prompt_overhead_tokens: int = Field(
        1536,
        ge=0,
        description="Tokens/minute reservation: the most tokens a prompt template adds to "
        "the question and context in one model call (the few-shot examples).",
    )
    key_prefix: str = Field("divconq:limits", description="Redis key prefix.")
