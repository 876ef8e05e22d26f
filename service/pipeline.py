"""The four modes: how decomposer and solver calls are sequenced and accounted.

- ``static`` (Divide-or-Conquer): one decomposer call writes up to N
  subquestions (or none); the solver answers each in order with the earlier
  Q/A as context, then answers the problem.
- ``hinted`` (Divide-or-Conquer, single call): one solver call with the
  subquestions as hints.
- ``socratic`` (Shridhar et al.): decomposer and solver alternate, one
  subquestion at a time, until the decomposer says DONE or the cap.
- ``direct``: the solver alone, step-by-step prompting; no decomposer call.

Every figure in the response is measured here, around the backend calls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

from service import prompts
from service.completion import Completion
from service.decomposer import Decomposer
from service.dependencies import waves
from service.metrics import Metrics
from service.parsing import extract_answer, parse_decomposition, parse_next_subquestion
from service.schemas import (
    DecomposeResponse,
    DecomposeUsage,
    SolveResponse,
    SolveUsage,
    StageUsage,
    SubquestionResult,
    TokenUsage,
    TotalUsage,
)
from service.settings import NO_ADAPTER, Mode, Settings
from service.solver import SolverChain

T = TypeVar("T")


async def _timed(call: Awaitable[T]) -> tuple[T, float]:
    started = time.perf_counter()
    result = await call
    return result, time.perf_counter() - started


@dataclass
class _Run:
    """One request's state: its ids, inputs and running accounts."""

    request_id: str
    question: str
    context: str | None
    cap: int
    decomposer: StageUsage
    solver: StageUsage
    solver_chain: SolverChain
    adapter: str | None = None
    started: float = field(default_factory=time.perf_counter)
    decomposer_calls: int = 0
    repeats_dropped: int = 0

    def next_decomposer_id(self) -> str:
        # vLLM needs unique ids per generation; socratic makes several.
        self.decomposer_calls += 1
        return f"{self.request_id}-d{self.decomposer_calls}"

    @property
    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000.0


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        decomposer: Decomposer,
        solvers: dict[str, SolverChain],
        metrics: Metrics,
    ) -> None:
        self._settings = settings
        self._decomposer = decomposer
        self._solvers = solvers
        self._metrics = metrics

    def _run(
        self,
        request_id: str,
        question: str,
        context: str | None,
        cap: int | None,
        solver: str | None = None,
        adapter: str | None = None,
    ) -> _Run:
        chain = self._solvers[solver or self._settings.default_solver]
        if adapter is None:
            adapter = self._settings.default_adapter
        elif adapter == NO_ADAPTER:
            adapter = None
        return _Run(
            request_id=request_id,
            question=question,
            context=context,
            cap=cap or self._settings.max_subquestions,
            decomposer=StageUsage(model=self._decomposer.model_name, adapter=adapter),
            solver=StageUsage(model=chain.model_name),
            solver_chain=chain,
            adapter=adapter,
        )

    def _charge(
        self,
        usage: StageUsage,
        stage: str,
        completion: Completion,
        seconds: float,
        *,
        count_latency: bool = True,
    ) -> None:
        """Account one model call in the response and in the metrics alike."""
        # A fallback may have answered: price and label by the model that did.
        model = completion.model or usage.model
        cost = self._settings.price(model).cost_usd(
            completion.prompt_tokens, completion.completion_tokens
        )
        usage.calls += 1
        usage.prompt_tokens += completion.prompt_tokens
        usage.completion_tokens += completion.completion_tokens
        if count_latency:
            usage.latency_ms += seconds * 1000.0
        usage.cost_usd += cost
        if completion.profile and completion.profile not in usage.answered_by:
            usage.answered_by.append(completion.profile)
        self._metrics.model_call(stage, model, completion, seconds, cost)

    # --- stages -----------------------------------------------------------------

    async def _decompose_static(self, run: _Run) -> list[str]:
        # A distilled adapter learned the format: it gets the short zero-shot
        # prompt; the base model needs the few-shot one.
        prompt = (
            prompts.distilled_decomposition(run.question, run.context)
            if run.adapter
            else prompts.static_decomposition(run.question, run.context)
        )
        completion, seconds = await _timed(
            self._decomposer.complete(
                prompt,
                max_tokens=self._settings.decomposer.max_tokens,
                stop=prompts.static_stop(run.cap),
                request_id=run.next_decomposer_id(),
                adapter=run.adapter,
            )
        )
        self._charge(run.decomposer, "decompose", completion, seconds)
        subs, run.repeats_dropped = parse_decomposition(completion.text, run.cap)
        return subs

    async def _solve(
        self, run: _Run, messages: prompts.Messages, stage: str, *, count_latency: bool = True
    ) -> tuple[Completion, float]:
        completion, seconds = await _timed(
            run.solver_chain.chat(messages, request_id=run.request_id, stage=stage)
        )
        self._charge(run.solver, stage, completion, seconds, count_latency=count_latency)
        return completion, seconds

    async def _answer(
        self,
        run: _Run,
        sub: str,
        history: list[tuple[str, str]],
        *,
        count_latency: bool = True,
    ) -> SubquestionResult:
        messages = prompts.subquestion(run.question, sub, history, run.context)
        completion, seconds = await self._solve(run, messages, "solve", count_latency=count_latency)
        answer = completion.text.strip()
        return SubquestionResult(
            question=sub,
            answer=answer,
            latency_ms=seconds * 1000.0,
            usage=TokenUsage(
                prompt_tokens=completion.prompt_tokens,
                completion_tokens=completion.completion_tokens,
            ),
        )

    # --- modes ------------------------------------------------------------------

    async def _static(self, run: _Run) -> tuple[list[SubquestionResult], prompts.Messages]:
        subs = await self._decompose_static(run)
        history: list[tuple[str, str]] = []
        results: list[SubquestionResult] = []
        groups = (
            waves(subs) if self._settings.parallel_subquestions else [[i] for i in range(len(subs))]
        )
        for group in groups:
            if len(group) == 1:
                result = await self._answer(run, subs[group[0]], history)
                batch = [result]
            else:
                # Independent subquestions (service/dependencies.py) at once; the
                # stage latency is the wave's wall time, not the sum of its calls.
                started = time.perf_counter()
                batch = await asyncio.gather(
                    *(self._answer(run, subs[i], history, count_latency=False) for i in group)
                )
                run.solver.latency_ms += (time.perf_counter() - started) * 1000.0
            results += batch
            history += [(r.question, r.answer) for r in batch]
        return results, prompts.final(run.question, history, run.context)

    async def _hinted(self, run: _Run) -> tuple[list[SubquestionResult], prompts.Messages]:
        subs = await self._decompose_static(run)
        # Hints are not answered one by one; they are listed with empty answers.
        results = [
            SubquestionResult(
                question=s,
                answer="",
                latency_ms=0.0,
                usage=TokenUsage(prompt_tokens=0, completion_tokens=0),
            )
            for s in subs
        ]
        return results, prompts.hinted(run.question, subs, run.context)

    async def _socratic(self, run: _Run) -> tuple[list[SubquestionResult], prompts.Messages]:
        history: list[tuple[str, str]] = []
        results: list[SubquestionResult] = []
        for _ in range(run.cap):
            completion, seconds = await _timed(
                self._decomposer.complete(
                    prompts.socratic_next(run.question, history, run.context),
                    max_tokens=self._settings.decomposer.socratic_max_tokens,
                    stop=prompts.SOCRATIC_STOP,
                    request_id=run.next_decomposer_id(),
                )
            )
            self._charge(run.decomposer, "decompose", completion, seconds)
            sub = parse_next_subquestion(completion.text, [q for q, _ in history])
            if sub is None:
                break
            result = await self._answer(run, sub, history)
            results.append(result)
            history.append((sub, result.answer))
        return results, prompts.final(run.question, history, run.context)

    async def _direct(self, run: _Run) -> tuple[list[SubquestionResult], prompts.Messages]:
        return [], prompts.direct(run.question, run.context)

    # --- entry points -------------------------------------------------------------

    async def solve(
        self,
        *,
        request_id: str,
        question: str,
        mode: Mode,
        context: str | None = None,
        max_subquestions: int | None = None,
        solver: str | None = None,
        adapter: str | None = None,
    ) -> SolveResponse:
        # Adapters are trained for static decomposition; socratic keeps the
        # base model's few-shot prompt, and direct has no decomposer call.
        if mode not in ("static", "hinted"):
            adapter = NO_ADAPTER
        run = self._run(request_id, question, context, max_subquestions, solver, adapter)
        plan = {
            "static": self._static,
            "hinted": self._hinted,
            "socratic": self._socratic,
            "direct": self._direct,
        }[mode]
        subquestions, final_messages = await plan(run)
        final, _ = await self._solve(run, final_messages, "final")
        answer_text = final.text.strip()
        self._metrics.subquestions.labels(mode).observe(len(subquestions))
        return SolveResponse(
            id=request_id,
            mode=mode,
            answer=extract_answer(answer_text, question),
            answer_text=answer_text,
            subquestions=subquestions,
            usage=SolveUsage(
                decomposer=run.decomposer,
                solver=run.solver,
                total=TotalUsage(
                    prompt_tokens=run.decomposer.prompt_tokens + run.solver.prompt_tokens,
                    completion_tokens=run.decomposer.completion_tokens
                    + run.solver.completion_tokens,
                    cost_usd=run.decomposer.cost_usd + run.solver.cost_usd,
                ),
            ),
            latency_ms=run.elapsed_ms,
        )

    async def decompose(
        self,
        *,
        request_id: str,
        question: str,
        context: str | None = None,
        max_subquestions: int | None = None,
        adapter: str | None = None,
    ) -> DecomposeResponse:
        run = self._run(request_id, question, context, max_subquestions, adapter=adapter)
        subs = await self._decompose_static(run)
        return DecomposeResponse(
            id=request_id,
            subquestions=subs,
            repeats_dropped=run.repeats_dropped,
            usage=DecomposeUsage(decomposer=run.decomposer),
            latency_ms=run.elapsed_ms,
        )
