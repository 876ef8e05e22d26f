"""Retries, per-solver concurrency and fallbacks around the solver backends.

- ``ResilientSolver`` wraps one profile's backend: at most ``max_concurrency``
  calls in flight, and retries of retryable failures (connect errors,
  timeouts, 408, 409, 429, 5xx) with capped exponential backoff and full
  jitter. A server's ``Retry-After`` is honoured when it fits in the request's
  remaining deadline; when it does not, we fail now rather than sleep into a
  504.
- ``SolverChain`` tries a profile, then its fallbacks in order, and marks the
  completion with the profile that answered.

A streamed call (``on_text``) is retried, or handed to a fallback, only while
none of its text has been passed on: the client already holds what was
written, and another attempt would write it again.

Every attempt is counted in ``divconq_solver_calls_total{outcome}``: ``ok``,
``retried`` (failed, tried again), or the final failure's kind; in a traced
request every attempt is a ``chat {model}`` span of its own (a retry carries
``http.request.resend_count``, a fallback's ``divconq.solver.fallback``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.trace import SpanKind

from service.core.completion import ChatCall, Completion, TextSink
from service.core.deadline import remaining
from service.core.errors import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from service.core.settings import SolverSettings
from service.observability import semconv, tracing
from service.observability.metrics import Metrics
from service.solver.base import Solver

log = logging.getLogger(__name__)


# Besides 5xx: timeouts, conflicts and rate limits may pass on their own.
RETRYABLE_STATUS = frozenset({408, 409, 429})


def is_transient(exc: UpstreamError) -> bool:
    """Whether the same call may succeed if repeated: decided by the failure's type."""
    if isinstance(exc, UpstreamStatusError):
        return exc.status in RETRYABLE_STATUS or exc.status >= 500
    # Never a malformed answer: the server would say the same again.
    return isinstance(exc, UpstreamTimeout | UpstreamConnectError)


class Relay:
    """Passes a streamed reply's text on, and remembers whether any went."""

    def __init__(self, on_text: TextSink | None) -> None:
        self._on_text = on_text
        self.written = False
        self.sink: TextSink | None = self._write if on_text is not None else None

    def _write(self, piece: str) -> None:
        assert self._on_text is not None
        self.written = True
        self._on_text(piece)


class ResilientSolver:
    def __init__(
        self,
        name: str,
        backend: Solver,
        profile: SolverSettings,
        metrics: Metrics,
        *,
        identity: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        # What changes this profile's answers (service.solver.sampling_identity).
        self.identity = dict(identity or {"profile": name})
        self.model_name = backend.model_name
        self._backend = backend
        self._profile = profile
        self._metrics = metrics
        self._slots = asyncio.Semaphore(profile.max_concurrency)
        in_process = profile.backend in semconv.IN_PROCESS
        attrs: dict[str, str | int | bool | float] = {
            semconv.PROFILE: name,
            semconv.GEN_AI_REQUEST_TEMPERATURE: profile.temperature,
        }
        if profile.max_tokens is not None:
            attrs[semconv.GEN_AI_REQUEST_MAX_TOKENS] = profile.max_tokens
        # Every attempt's span starts from these (made once, not per call).
        self._spans = tracing.CallSpans(
            semconv.OP_CHAT,
            self.model_name,
            semconv.PROVIDERS.get(profile.backend, profile.backend),
            SpanKind.INTERNAL if in_process else SpanKind.CLIENT,
            attrs,
        )

    def _backoff(self, attempt: int) -> float:
        cap = min(self._profile.backoff_max_s, self._profile.backoff_base_s * 2**attempt)
        # Full jitter: retries from many requests spread out instead of stampeding.
        return random.uniform(0.0, cap)

    async def chat(self, call: ChatCall, *, fallback: bool = False) -> Completion:
        attempt = 0
        relay = Relay(call.on_text)
        relayed = dataclasses.replace(call, on_text=relay.sink)
        while True:
            try:
                async with self._slots:
                    completion = await self._attempt(relayed, attempt, fallback)
            except UpstreamError as exc:
                delay = None if relay.written else self._retry_delay(exc, attempt)
                if delay is None:
                    self._metrics.solver_calls.labels(exc.outcome).inc()
                    raise
                self._metrics.solver_calls.labels("retried").inc()
                log.info(
                    "solver call failed; retrying",
                    extra={
                        "profile": self.name,
                        "error_kind": exc.outcome,
                        "attempt": attempt + 1,
                        "delay_s": round(delay, 3),
                    },
                )
                await asyncio.sleep(delay)
                attempt += 1
                continue
            self._metrics.solver_calls.labels("ok").inc()
            return dataclasses.replace(completion, profile=self.name, model=self.model_name)

    async def _attempt(self, call: ChatCall, attempt: int, fallback: bool) -> Completion:
        """One call to the backend, as its own span when the request is traced."""
        if tracing.current() is None:
            return await self._backend.chat(call)
        # What this attempt adds: the stage it serves, a retry's count, a fallback.
        attrs: dict[str, str | int | bool] = {}
        if call.stage is not None:
            attrs[semconv.STAGE] = call.stage
        if attempt:
            attrs[semconv.RESEND_COUNT] = attempt
        if fallback:
            attrs[semconv.FALLBACK] = True
        with tracing.model_call(self._spans, attrs, call.messages) as span:
            completion = await self._backend.chat(call)
            tracing.record_completion(span, completion, completion.model or self.model_name)
            return completion

    def _retry_delay(self, exc: UpstreamError, attempt: int) -> float | None:
        """Seconds to wait before retrying, or None to give up now."""
        if not is_transient(exc) or attempt >= self._profile.max_retries:
            return None
        delay = self._backoff(attempt)
        if isinstance(exc, UpstreamStatusError) and exc.retry_after_s is not None:
            delay = exc.retry_after_s
        left = remaining()
        if left is not None and delay >= left:
            return None
        return delay


class SolverChain:
    """A profile and its fallbacks, tried in order."""

    def __init__(self, members: Sequence[ResilientSolver]) -> None:
        self._members = list(members)
        self.name = members[0].name
        self.model_name = members[0].model_name
        # The response cache's view: a fallback may answer, so all members count.
        self.identity = [m.identity for m in self._members]
        self.deterministic = all(m.identity.get("temperature", 0.0) == 0.0 for m in self._members)

    async def chat(self, call: ChatCall) -> Completion:
        failure: UpstreamError | None = None
        relay = Relay(call.on_text)
        relayed = dataclasses.replace(call, on_text=relay.sink)
        for i, member in enumerate(self._members):
            try:
                return await member.chat(relayed, fallback=i > 0)
            except UpstreamError as exc:
                failure = exc
                if remaining() == 0.0 or relay.written:
                    break
                log.warning(
                    "solver profile failed",
                    extra={"profile": member.name, "error_kind": exc.outcome},
                )
        assert failure is not None
        raise failure
