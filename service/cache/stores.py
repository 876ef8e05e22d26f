"""Where cache entries live: a Protocol, and one store per URL scheme.

- ``memory`` (the default): a bounded LRU in this process, with expiry.
- ``redis://`` / ``rediss://`` / ``unix://``: Redis (``DIVCONQ_REDIS_URL``), so
  every replica reads what any replica wrote; entries expire with Redis's own
  ``SET ... EX``.

A store that fails raises ``CacheUnavailable``: the cache then counts an
error and the request goes on uncached (a cache outage is never a 5xx).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol


class CacheUnavailable(Exception):
    """The store could not be reached or answered nonsense."""


class CacheStore(Protocol):
    kind: str  # "memory", "redis": shown in /readyz

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> None: ...

    async def check(self) -> None:
        """Raise ``CacheUnavailable`` unless the store answers (start-up check)."""
        ...

    async def aclose(self) -> None: ...


class MemoryStore:
    """A bounded LRU: the least recently used entry goes when ``max_entries`` is reached."""

    kind = "memory"

    def __init__(self, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._max = max_entries
        self._clock = clock

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires <= self._clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        self._entries[key] = (self._clock() + ttl_s, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    async def check(self) -> None:
        return None

    async def aclose(self) -> None:
        self._entries.clear()


class RedisStore:
    """Entries in Redis, shared by every replica that points at it."""

    kind = "redis"

    def __init__(self, url: str, timeout_s: float) -> None:
        import redis.asyncio as redis

        self._redis = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )

    async def get(self, key: str) -> bytes | None:
        try:
            value = await self._redis.get(key)
        except Exception as exc:  # redis raises many kinds; all mean "no cache now"
            raise CacheUnavailable(str(exc)) from None
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        try:
            await self._redis.set(key, value, px=max(1, int(ttl_s * 1000)))
        except Exception as exc:
            raise CacheUnavailable(str(exc)) from None

    async def check(self) -> None:
        try:
            await self._redis.ping()
        except Exception as exc:
            raise CacheUnavailable(str(exc)) from None

    async def aclose(self) -> None:
        await self._redis.aclose()


def open_store(url: str, *, max_entries: int, timeout_s: float) -> CacheStore:
    """The store for ``url``: ``memory``, or a Redis URL."""
    scheme = url.partition("://")[0].lower() if "://" in url else url.lower()
    if scheme == "memory":
        return MemoryStore(max_entries)
    if scheme in ("redis", "rediss", "unix"):
        return RedisStore(url, timeout_s)
    raise ValueError(f"unknown cache store {scheme!r}: use 'memory' or a redis:// URL")
