"""Admission and settlement of one request against its key's limits.

``Limiter.admit`` runs once a request is resolved (its plan says how many
tokens it can spend) and before any model call: it reserves the request and
its tokens in the store, or raises ``LimitExceeded`` (429, ``Retry-After``).
``Limiter.settle`` runs when the request ends, however it ends: it trues the
token reservation up to what was really spent and adds the real cost (from
``DIVCONQ_PRICES``) to the key's day. Keys without limits never touch the
store; every keyed request is counted per key in the metrics.

A store that cannot be reached never becomes a 500: the request is admitted
uncounted (``on_store_error = "allow"``) or refused with 503 (``"deny"``),
and the failure is counted and shown in ``/readyz``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from service.core.errors import InvalidRequest, LimitExceeded, LimitsUnavailable
from service.core.keys import ApiKey
from service.core.settings import Settings
from service.core.spend import Spend
from service.observability.metrics import Metrics
from service.tenancy.store import Decision, LimitStore, Quota, StoreUnavailable

log = logging.getLogger(__name__)

_ERRORS = {
    "requests_per_minute": ("rate_limit_exceeded", "requests per minute"),
    "tokens_per_minute": ("token_limit_exceeded", "tokens per minute"),
    "usd_per_day": ("budget_exceeded", "USD per day (UTC)"),
}


def quota_of(key: ApiKey) -> Quota:
    return Quota(key.requests_per_minute, key.tokens_per_minute, key.usd_per_day)


@dataclass
class Ticket:
    """One admitted request: its key, and what it reserved (None: nothing counted)."""

    key: ApiKey
    reserved: int = 0
    decision: Decision | None = None


class Limiter:
    def __init__(self, settings: Settings, store: LimitStore, metrics: Metrics) -> None:
        self.store = store
        self.metrics = metrics
        self.enabled = settings.limits.enabled
        self.policy = settings.limits.on_store_error
        # What the last call to the store found (shown in /readyz).
        self.reachable = True

    def _store_failed(self, op: str, exc: StoreUnavailable) -> None:
        self.reachable = False
        self.metrics.limit_store_errors.labels(op, self.policy).inc()
        log.warning("limits store unreachable", extra={"op": op, "error": str(exc)})

    async def admit(self, key: ApiKey, reserve_tokens: int) -> Ticket:
        """Count the request against ``key``'s limits; raises 429 (or 503) if it is over."""
        ticket = Ticket(key)
        if not (self.enabled and key.limited):
            return ticket
        quota = quota_of(key)
        tpm = key.tokens_per_minute
        if tpm is not None and reserve_tokens > tpm:
            # No window would ever admit it: a 429 would have the client retry forever.
            raise InvalidRequest(
                f"this request may use up to {reserve_tokens} tokens, more than key "
                f"'{key.name}' may use per minute ({tpm}); ask for fewer subquestions"
            )
        try:
            decision = await self.store.admit(key.name, quota, reserve_tokens)
        except StoreUnavailable as exc:
            self._store_failed("admit", exc)
            if self.policy == "deny":
                raise LimitsUnavailable(
                    "the limits store cannot be reached; retry shortly",
                    headers={"Retry-After": "5"},
                ) from None
            return ticket
        self.reachable = True
        if not decision.admitted:
            assert decision.limit is not None
            error_type, unit = _ERRORS[decision.limit]
            value = getattr(key, decision.limit)
            self.metrics.limit_rejections.labels(key.name, decision.limit).inc()
            raise LimitExceeded(
                f"key '{key.name}' is over its limit of {value:g} {unit}; "
                f"retry in {decision.retry_after_s} s",
                error_type=error_type,
                retry_after_s=decision.retry_after_s,
            )
        ticket.reserved = reserve_tokens
        ticket.decision = decision
        return ticket

    async def settle(self, ticket: Ticket, spend: Spend) -> None:
        """The request ended: its real tokens and cost replace the reservation."""
        key = ticket.key
        self.metrics.key_tokens.labels(key.name).inc(spend.tokens)
        self.metrics.key_cost.labels(key.name).inc(spend.cost_usd)
        if ticket.decision is None:
            return
        delta = spend.tokens - ticket.reserved
        try:
            await self.store.settle(key.name, quota_of(key), ticket.decision, delta, spend.cost_usd)
        except StoreUnavailable as exc:
            self._store_failed("settle", exc)

    async def status(self) -> dict[str, Any]:
        """For /readyz: where the limits are counted and whether that store answers."""
        try:
            await self.store.ping()
        except StoreUnavailable as exc:
            self._store_failed("ping", exc)
        else:
            self.reachable = True
        return {
            "enabled": self.enabled,
            "store": self.store.kind,
            "store_reachable": self.reachable,
            "on_store_error": self.policy,
        }
