"""The response cache the pipeline and the routes use: a store plus metrics.

Lookups are counted in ``divconq_cache_lookups_total{kind, outcome}``
(kind: ``call`` for one solver call, ``solve`` for a whole ``/solve``;
outcome: ``hit``, ``miss``, ``error``). A store error is a miss that is
counted, logged once per outage, and never fails the request. In a traced
request each lookup is a ``cache.get {kind}`` span with its outcome.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from opentelemetry.trace import SpanKind

from service.cache.keys import CachePolicy, cache_key
from service.cache.stores import CacheStore, CacheUnavailable, open_store
from service.core.completion import Completion
from service.core.settings import Settings
from service.observability import semconv, tracing
from service.observability.metrics import Metrics

log = logging.getLogger(__name__)


class ResponseCache:
    def __init__(self, store: CacheStore, ttl_s: float, metrics: Metrics, *, enabled: bool) -> None:
        self.store = store
        self.enabled = enabled
        self._ttl_s = ttl_s
        self._metrics = metrics
        self._failing = False

    def _error(self, exc: CacheUnavailable, kind: str) -> None:
        self._metrics.cache_lookups.labels(kind, "error").inc()
        if not self._failing:
            log.warning("cache store unavailable; serving uncached", extra={"error": str(exc)})
        self._failing = True

    async def get(self, kind: str, policy: CachePolicy, parts: Any) -> Any | None:
        """The JSON entry for ``parts`` in the policy's namespace, or None (a miss)."""
        if not (self.enabled and policy.read):
            return None
        with tracing.span(f"cache.get {kind}", SpanKind.INTERNAL, {semconv.CACHE_KIND: kind}):
            try:
                raw = await self.store.get(cache_key(kind, policy.namespace, parts))
            except CacheUnavailable as exc:
                self._error(exc, kind)
                tracing.annotate(semconv.CACHE_OUTCOME, "error")
                return None
            self._failing = False
            outcome = "miss" if raw is None else "hit"
            self._metrics.cache_lookups.labels(kind, outcome).inc()
            tracing.annotate(semconv.CACHE_OUTCOME, outcome)
            return None if raw is None else json.loads(raw)

    async def put(self, kind: str, policy: CachePolicy, parts: Any, entry: Any) -> None:
        if not (self.enabled and policy.write):
            return
        value = json.dumps(entry, separators=(",", ":")).encode()
        try:
            await self.store.set(cache_key(kind, policy.namespace, parts), value, self._ttl_s)
        except CacheUnavailable as exc:
            self._error(exc, kind)

    async def aclose(self) -> None:
        await self.store.aclose()


def completion_entry(c: Completion) -> dict[str, Any]:
    """What a cached solver call keeps: the answer, not the tokens (a hit spends none)."""
    return {
        "text": c.text,
        "finish_reason": c.finish_reason,
        "stop_reason": c.stop_reason,
        "profile": c.profile,
        "model": c.model,
    }


def completion_from(entry: dict[str, Any]) -> Completion:
    return Completion(
        text=str(entry["text"]),
        prompt_tokens=0,
        completion_tokens=0,
        finish_reason=str(entry.get("finish_reason") or "stop"),
        stop_reason=entry.get("stop_reason"),
        profile=str(entry.get("profile") or ""),
        model=str(entry.get("model") or ""),
        cached=True,
    )


def store_url(settings: Settings) -> str:
    """``DIVCONQ_CACHE__URL``, else ``DIVCONQ_REDIS_URL``, else the in-process LRU."""
    if settings.cache.url:
        return settings.cache.url.get_secret_value()
    if settings.redis_url is not None:
        return settings.redis_url.get_secret_value()
    return "memory"


def build_cache(settings: Settings, metrics: Metrics) -> ResponseCache:
    c = settings.cache
    store = open_store(store_url(settings), max_entries=c.max_entries, timeout_s=c.timeout_s)
    return ResponseCache(store, c.ttl_s, metrics, enabled=c.enabled)
