"""Where per-key counters live: the ``LimitStore`` protocol and the in-process store.

Windows are fixed and UTC-aligned: a minute for requests and tokens, a day for
USD. ``admit`` checks every limit of a key and, only if all pass, counts the
request and reserves its tokens, as one atomic step (no read-then-write across
awaits or round trips: a replica cannot slip in between). ``settle`` trues the
reservation up to the tokens really spent and adds the request's cost to the
day it ends in.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

Limit = Literal["requests_per_minute", "tokens_per_minute", "usd_per_day"]
MINUTE_S = 60
DAY_S = 86400


class StoreUnavailable(Exception):
    """The store could not be reached (or answered nonsense); the policy decides."""


@dataclass(frozen=True)
class Quota:
    """One key's limits; None = no such limit."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    usd_per_day: float | None = None


@dataclass(frozen=True)
class Decision:
    """What admission decided, and where its reservation was counted."""

    admitted: bool
    # The limit that refused it; None when admitted.
    limit: Limit | None = None
    # Seconds until that limit's window ends (the Retry-After).
    retry_after_s: int = 0
    # The minute the tokens were reserved in (settle trues up that one).
    minute: int = 0


class LimitStore(Protocol):
    kind: str

    async def admit(self, name: str, quota: Quota, reserve_tokens: int) -> Decision: ...

    async def settle(
        self, name: str, quota: Quota, decision: Decision, token_delta: int, cost_usd: float
    ) -> None: ...

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...


def retry_after(now: float, window_s: int) -> int:
    """Whole seconds to the end of the current window (at least 1)."""
    return max(1, window_s - int(now) % window_s)


class MemoryStore:
    """Counters in this process: exact for one replica, no set-up.

    The event loop runs ``admit`` without awaiting in between, so check and
    count are one step. Windows older than the current one are dropped.
    """

    kind = "memory"

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._requests: dict[tuple[str, int], int] = {}
        self._tokens: dict[tuple[str, int], int] = {}
        self._usd: dict[tuple[str, int], float] = {}

    def _prune(self, minute: int, day: int) -> None:
        for counts in (self._requests, self._tokens):
            for k in [k for k in counts if k[1] < minute - 1]:
                del counts[k]
        for k in [k for k in self._usd if k[1] < day - 1]:
            del self._usd[k]

    async def admit(self, name: str, quota: Quota, reserve_tokens: int) -> Decision:
        now = self._clock()
        minute, day = int(now // MINUTE_S), int(now // DAY_S)
        self._prune(minute, day)
        if quota.usd_per_day is not None and self._usd.get((name, day), 0.0) >= quota.usd_per_day:
            return Decision(False, "usd_per_day", retry_after(now, DAY_S), minute)
        rpm = quota.requests_per_minute
        if rpm is not None and self._requests.get((name, minute), 0) + 1 > rpm:
            return Decision(False, "requests_per_minute", retry_after(now, MINUTE_S), minute)
        tpm = quota.tokens_per_minute
        if tpm is not None and self._tokens.get((name, minute), 0) + reserve_tokens > tpm:
            return Decision(False, "tokens_per_minute", retry_after(now, MINUTE_S), minute)
        if rpm is not None:
            self._requests[name, minute] = self._requests.get((name, minute), 0) + 1
        if tpm is not None:
            self._tokens[name, minute] = self._tokens.get((name, minute), 0) + reserve_tokens
        return Decision(True, minute=minute)

    async def settle(
        self, name: str, quota: Quota, decision: Decision, token_delta: int, cost_usd: float
    ) -> None:
        if quota.tokens_per_minute is not None and (name, decision.minute) in self._tokens:
            self._tokens[name, decision.minute] += token_delta
        if quota.usd_per_day is not None and cost_usd:
            day = int(self._clock() // DAY_S)
            self._usd[name, day] = self._usd.get((name, day), 0.0) + cost_usd

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
