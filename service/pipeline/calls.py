"""The one place a model call happens, and how each is accounted.

``ModelCalls`` is what ``service.pipeline.modes.Pipeline`` sequences: a
decomposer or solver call for a stage (decompose, solve, final) is made in
``_call``, where a failure learns its stage, a backend's refusal of the input
becomes the client's 422, and the call's tokens, cost and time are charged to
the response, the metrics and the key's spend alike. Solver calls go through
the response cache where the plan allows it (``_chat``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Sequence

from opentelemetry.trace import INVALID_SPAN, Span, SpanKind

from service.cache.cache import ResponseCache, completion_entry, completion_from
from service.core.completion import ChatCall, Completion, PromptCall, TextSink
from service.core.errors import InvalidRequest, UpstreamError, UpstreamStatusError
from service.core.settings import Settings
from service.core.spend import charge
from service.decomposer import Decomposer
from service.observability import semconv, tracing
from service.observability.metrics import Metrics
from service.pipeline import prompts
from service.pipeline.run_state import Run, Stage
from service.pipeline.token_estimate import TokenEstimator

# A solver call's stage opens no span here: its attempts' spans carry the stage.
_NO_SPAN: contextlib.AbstractContextManager[Span] = contextlib.nullcontext(INVALID_SPAN)


class ModelCalls:
    """Model calls made and accounted for one pipeline; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        decomposer: Decomposer,
        metrics: Metrics,
        estimator: TokenEstimator | None = None,
        cache: ResponseCache | None = None,
    ) -> None:
        self._settings = settings
        self._decomposer = decomposer
        self._metrics = metrics
        self._estimator = estimator or TokenEstimator(None)
        self._cache = cache
        # The engine runs in process (an INTERNAL span); an 'openai' decomposer is a server.
        backend = settings.decomposer.backend
        self._decomposer_span = (
            ("openai", SpanKind.CLIENT) if backend == "openai" else (backend, SpanKind.INTERNAL)
        )
        # The decomposer calls' spans, by model (made once per model, not per call).
        self._decomposer_spans: dict[str, tracing.CallSpans] = {}

    def _trace_call(
        self, stage: Stage, name: str, prompt: str | prompts.Messages
    ) -> contextlib.AbstractContextManager[Span]:
        """A decomposer call's span; a solver call's spans (one per attempt) are the
        solver chain's, labelled with the stage they serve (``ChatCall.stage``)."""
        if stage.role != "decomposer":
            return _NO_SPAN
        model = stage.usage.model
        spans = self._decomposer_spans.get(model)
        if spans is None:
            provider, kind = self._decomposer_span
            spans = self._decomposer_spans[model] = tracing.CallSpans(
                semconv.OP_TEXT_COMPLETION, model, provider, kind
            )
        attrs = {semconv.STAGE: name}
        if stage.usage.adapter:
            attrs[semconv.ADAPTER] = stage.usage.adapter
        return tracing.model_call(spans, attrs, prompt)

    async def _call(
        self,
        stage: Stage,
        name: str,
        call: Awaitable[Completion],
        prompt: str | prompts.Messages,
    ) -> Completion:
        """Make one model call for ``name`` (decompose, solve, final) and account it.

        The one place a model call happens: a failure learns here which
        stage it broke, and the call's tokens, cost and time are charged to
        the response and the metrics alike (counted here with a tokenizer
        when the backend reported none: never a silent 0).
        """
        started = time.perf_counter()
        try:
            with stage.clock.running(), self._trace_call(stage, name, prompt) as span:
                completion = await call
                tracing.record_completion(span, completion, completion.model or stage.usage.model)
        except UpstreamError as exc:
            exc.during(name, stage.role)
            if isinstance(exc, UpstreamStatusError) and exc.refuses_input:
                # Deterministic: the backend (the embedded /v1 included) says the
                # input is wrong. Not retried (resilient.py); the client's 422.
                raise InvalidRequest(
                    f"the {exc.role} refused this input during '{name}': {exc.detail}",
                    stage=name,
                ) from None
            raise exc from None
        except InvalidRequest as exc:
            # A backend refused the input (the engine maps its own refusals
            # once, in service/embedded/engine.py): the request's fault, 422.
            exc.stage = exc.stage or name
            raise
        seconds = time.perf_counter() - started
        usage = stage.usage
        if completion.cached:
            usage.cached_calls += 1
            return completion
        # A fallback may have answered: price and label by the model that did.
        model = completion.model or usage.model
        if not completion.usage_reported:
            completion = await self._estimate(completion, prompt)
            usage.estimated = True
            self._metrics.usage_estimated.labels(name, model).inc()
        cost = self._settings.price(model).cost_usd(
            completion.prompt_tokens, completion.completion_tokens
        )
        usage.calls += 1
        usage.prompt_tokens += completion.prompt_tokens
        usage.completion_tokens += completion.completion_tokens
        usage.cost_usd += cost
        if completion.profile and completion.profile not in usage.answered_by:
            usage.answered_by.append(completion.profile)
        self._metrics.model_call(name, model, completion, seconds, cost)
        charge(completion.prompt_tokens + completion.completion_tokens, cost)
        return completion

    async def _estimate(self, completion: Completion, prompt: str | prompts.Messages) -> Completion:
        est = self._estimator
        sent = await (est.text(prompt) if isinstance(prompt, str) else est.chat(prompt))
        return dataclasses.replace(
            completion, prompt_tokens=sent, completion_tokens=await est.text(completion.text)
        )

    async def _decompose(
        self, run: Run, prompt: str, max_tokens: int, stop: Sequence[str]
    ) -> Completion:
        """One decomposer call, with the plan's adapter and the request's next call id."""
        call = PromptCall(prompt, max_tokens, stop, run.next_decomposer_id(), run.plan.adapter)
        return await self._call(
            run.decomposer, "decompose", self._decomposer.complete(call), prompt
        )

    async def _solve(
        self,
        run: Run,
        messages: prompts.Messages,
        stage: str,
        on_text: TextSink | None = None,
    ) -> Completion:
        call = ChatCall(messages, run.request_id, on_text, stage)
        return await self._call(run.solver, stage, self._chat(run, call), messages)

    async def _chat(self, run: Run, call: ChatCall) -> Completion:
        """One solver call, through the response cache where the plan allows it."""
        chain, policy = run.plan.solver, run.plan.cache
        assert chain is not None, "a /decompose plan has no solver"
        if self._cache is None or not policy.used or not (chain.deterministic or policy.force):
            return await chain.chat(call)
        parts = {"solver": chain.identity, "messages": list(call.messages)}
        entry = await self._cache.get("call", policy, parts)
        if entry is not None:
            return completion_from(entry)
        completion = await chain.chat(call)
        await self._cache.put("call", policy, parts, completion_entry(completion))
        return completion
