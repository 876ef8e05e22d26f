"""Per-key counters in Redis, shared by every replica.

Each step is one Lua script, which Redis runs atomically: ``admit`` reads the
key's counters, decides, and counts in one go (two replicas cannot both take
the last request of a minute), and ``settle`` trues up one reservation. The
window comes from the Redis server's clock (``TIME``), so replicas whose
clocks drift still share one minute. All of a key's counters carry one hash
tag (``{name}``), so a Redis Cluster keeps them in one slot.
"""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import urlsplit

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from service.tenancy.store import Decision, Limit, Quota, StoreUnavailable

# KEYS[1]: the key's prefix. ARGV: rpm, tpm, usd (-1 = none), tokens to reserve.
_ADMIT = """
local prefix = KEYS[1]
local rpm = tonumber(ARGV[1])
local tpm = tonumber(ARGV[2])
local usd = tonumber(ARGV[3])
local reserve = tonumber(ARGV[4])
local now = tonumber(redis.call('TIME')[1])
local minute = math.floor(now / 60)
local day = math.floor(now / 86400)
local rk = prefix .. ':rpm:' .. minute
local tk = prefix .. ':tpm:' .. minute
if usd >= 0 then
  local spent = tonumber(redis.call('GET', prefix .. ':usd:' .. day) or '0')
  if spent >= usd then return {0, 'usd_per_day', 86400 - now % 86400, minute} end
end
if rpm >= 0 and tonumber(redis.call('GET', rk) or '0') + 1 > rpm then
  return {0, 'requests_per_minute', 60 - now % 60, minute}
end
if tpm >= 0 and tonumber(redis.call('GET', tk) or '0') + reserve > tpm then
  return {0, 'tokens_per_minute', 60 - now % 60, minute}
end
if rpm >= 0 then
  redis.call('INCR', rk)
  redis.call('EXPIRE', rk, 120)
end
if tpm >= 0 then
  redis.call('INCRBY', tk, reserve)
  redis.call('EXPIRE', tk, 120)
end
return {1, '', 0, minute}
"""

# KEYS[1]: the key's prefix. ARGV: the reservation's minute, token delta,
# cost in USD (a decimal string), whether the key has a USD budget (1/0).
_SETTLE = """
local prefix = KEYS[1]
local tk = prefix .. ':tpm:' .. ARGV[1]
local delta = tonumber(ARGV[2])
if delta ~= 0 and redis.call('EXISTS', tk) == 1 then
  redis.call('INCRBY', tk, delta)
end
if ARGV[4] == '1' and tonumber(ARGV[3]) > 0 then
  local day = math.floor(tonumber(redis.call('TIME')[1]) / 86400)
  local uk = prefix .. ':usd:' .. day
  redis.call('INCRBYFLOAT', uk, ARGV[3])
  redis.call('EXPIRE', uk, 172800)
end
return 1
"""


def _none(limit: float | None) -> str:
    return "-1" if limit is None else repr(limit)


def connect(url: str, timeout_s: float) -> aioredis.Redis:
    """A pooled client; each command gives up after ``timeout_s`` (then the policy decides)."""
    return aioredis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, decode_responses=True
    )


def _where(url: str) -> str:
    """The URL without its credentials, for messages."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"


def check_reachable(url: str, timeout_s: float) -> str | None:
    """At start-up: None when Redis answers PING, else one line saying why not."""
    try:
        client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
    except ValueError as exc:
        return f"not a Redis URL ({exc})"
    try:
        client.ping()
    except (RedisError, OSError) as exc:
        return f"cannot reach Redis at {_where(url)} ({type(exc).__name__}: {exc})"
    finally:
        client.close()
    return None


class RedisStore:
    kind = "redis"

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self._admit = client.register_script(_ADMIT)
        self._settle = client.register_script(_SETTLE)

    def _key(self, name: str) -> str:
        return f"{self._prefix}:{{{name}}}"

    async def admit(self, name: str, quota: Quota, reserve_tokens: int) -> Decision:
        args = [
            _none(quota.requests_per_minute),
            _none(quota.tokens_per_minute),
            _none(quota.usd_per_day),
            str(reserve_tokens),
        ]
        try:
            raw = await self._admit(keys=[self._key(name)], args=args)
            ok, limit, retry, minute = cast(list[Any], raw)
        except (RedisError, OSError, ValueError, TypeError) as exc:
            raise StoreUnavailable(type(exc).__name__) from exc
        if int(ok):
            return Decision(True, minute=int(minute))
        return Decision(False, cast(Limit, str(limit)), max(1, int(retry)), int(minute))

    async def settle(
        self, name: str, quota: Quota, decision: Decision, token_delta: int, cost_usd: float
    ) -> None:
        args = [
            str(decision.minute),
            str(token_delta if quota.tokens_per_minute is not None else 0),
            f"{cost_usd:.12f}",
            "1" if quota.usd_per_day is not None else "0",
        ]
        try:
            await self._settle(keys=[self._key(name)], args=args)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(type(exc).__name__) from exc

    async def ping(self) -> None:
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(type(exc).__name__) from exc

    async def aclose(self) -> None:
        await self._client.aclose()
