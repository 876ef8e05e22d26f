"""The four modes: how decomposer and solver calls are sequenced and accounted.

- ``static`` (Divide-or-Conquer): one decomposer call writes up to N
  subquestions (or none); the solver answers each in order with the earlier
  Q/A as context, then answers the problem.
- ``hinted`` (Divide-or-Conquer, single call): one solver call with the
  subquestions as hints.
- ``socratic`` (Shridhar et al.): decomposer and solver alternate, one
  subquestion at a time, until the decomposer says DONE or the cap.
- ``direct``: the solver alone, step-by-step prompting; no decomposer call.

Progress goes to an optional ``events`` sink (``decomposition``,
``subquestion``, ``answer_delta``) as it happens: a streamed request runs the
very same code as a non-streamed one, so answers and accounting are identical.

Every figure in the response is measured around the backend calls, in
``ModelCalls._call`` (service/pipeline/calls.py), which is also where a failure
learns its stage. What to run (mode, cap, solver chain and its prompt style,
adapter) comes settled in a ``Plan`` (``service/pipeline/plan.py``); nothing
here re-derives a default or branches on the solver's prompt style.

In a traced request a run is one ``invoke_workflow`` span (mode, subquestion
count, final status) holding a span per decomposer call and, from the solver
chain, one per solver attempt (``service/observability/tracing.py``).
"""

from __future__ import annotations

import asyncio
import time

from service.core.schemas import (
    DecomposeResponse,
    DecomposeUsage,
    DecompositionEvent,
    SolveResponse,
    SolveUsage,
    StageUsage,
    SubquestionEvent,
    SubquestionResult,
    TokenUsage,
    TotalUsage,
)
from service.core.settings import Mode
from service.observability import semconv, tracing
from service.pipeline import prompts
from service.pipeline.cached import replayed, solve_key
from service.pipeline.calls import ModelCalls
from service.pipeline.dependencies import waves
from service.pipeline.parsing import extract_answer, parse_decomposition, parse_next_subquestion
from service.pipeline.plan import Plan
from service.pipeline.run_state import AnswerStream, EventSink, Run, Stage


class Pipeline(ModelCalls):
    """The four modes over the accounted model calls of ``ModelCalls``."""

    def _run(self, request_id: str, plan: Plan, events: EventSink | None = None) -> Run:
        solver_model = plan.solver.model_name if plan.solver else ""
        return Run(
            request_id=request_id,
            plan=plan,
            events=events,
            decomposer=Stage(
                "decomposer", StageUsage(model=self._decomposer.model_name, adapter=plan.adapter)
            ),
            solver=Stage("solver", StageUsage(model=solver_model)),
        )

    # --- stages -----------------------------------------------------------------

    async def _decompose_static(self, run: Run) -> list[str]:
        # A distilled adapter learned the format: it gets the short zero-shot
        # prompt; the base model needs the few-shot one.
        cap = run.plan.cap
        prompt = (
            prompts.distilled_decomposition(run.question, run.context)
            if run.plan.adapter
            else prompts.static_decomposition(run.question, run.context)
        )
        completion = await self._decompose(
            run, prompt, self._settings.decomposer.max_tokens, prompts.static_stop(cap)
        )
        subs, run.repeats_dropped = parse_decomposition(completion.text, cap)
        run.emit(
            "decomposition",
            DecompositionEvent(subquestions=subs, repeats_dropped=run.repeats_dropped),
        )
        return subs

    async def _answer(
        self, run: Run, index: int, sub: str, history: list[tuple[str, str]]
    ) -> SubquestionResult:
        messages = run.plan.prompts.subquestion(run.question, sub, history, run.context)
        started = time.perf_counter()
        completion = await self._solve(run, messages, "solve")
        result = SubquestionResult(
            question=sub,
            answer=completion.text.strip(),
            latency_ms=(time.perf_counter() - started) * 1000.0,
            usage=TokenUsage(
                prompt_tokens=completion.prompt_tokens,
                completion_tokens=completion.completion_tokens,
            ),
        )
        if run.events is not None:
            run.emit("subquestion", SubquestionEvent(index=index, **dict(result)))
        return result

    # --- modes ------------------------------------------------------------------

    async def _static(self, run: Run) -> tuple[list[SubquestionResult], prompts.Messages]:
        subs = await self._decompose_static(run)
        history: list[tuple[str, str]] = []
        results: list[SubquestionResult] = []
        groups = (
            waves(subs) if self._settings.parallel_subquestions else [[i] for i in range(len(subs))]
        )
        for group in groups:
            # Independent subquestions (service/pipeline/dependencies.py) at once; the
            # solver's busy clock counts the wave's wall time, not each call's.
            batch = await asyncio.gather(*(self._answer(run, i, subs[i], history) for i in group))
            results += batch
            history += [(r.question, r.answer) for r in batch]
        return results, self._final(run, history)

    async def _hinted(self, run: Run) -> tuple[list[SubquestionResult], prompts.Messages]:
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
        return results, run.plan.prompts.hinted(run.question, subs, run.context)

    async def _socratic(self, run: Run) -> tuple[list[SubquestionResult], prompts.Messages]:
        history: list[tuple[str, str]] = []
        results: list[SubquestionResult] = []
        for _ in range(run.plan.cap):
            # The distilled question generator learned the format; the base model
            # needs the few-shot prompt.
            ask = prompts.socratic_distilled if run.plan.adapter else prompts.socratic_next
            prompt = ask(run.question, history, run.context)
            completion = await self._decompose(
                run, prompt, self._settings.decomposer.socratic_max_tokens, prompts.SOCRATIC_STOP
            )
            sub = parse_next_subquestion(completion.text, [q for q, _ in history])
            if sub is None:
                break
            run.emit(
                "decomposition", DecompositionEvent(subquestions=[*(q for q, _ in history), sub])
            )
            result = await self._answer(run, len(history), sub, history)
            results.append(result)
            history.append((sub, result.answer))
        return results, self._final(run, history)

    async def _direct(self, run: Run) -> tuple[list[SubquestionResult], prompts.Messages]:
        return [], run.plan.prompts.direct(run.question, run.context)

    def _final(self, run: Run, history: list[tuple[str, str]]) -> prompts.Messages:
        return run.plan.prompts.final(run.question, history, run.context)

    # --- entry points -------------------------------------------------------------

    async def solve(
        self, plan: Plan, *, request_id: str, events: EventSink | None = None
    ) -> SolveResponse:
        """Run a ``/solve`` plan (``service.pipeline.plan.resolve``) to its final answer.

        ``events`` gets ``decomposition`` (static, hinted: once; socratic: each
        round, the subquestions so far), ``subquestion`` (each answered one)
        and ``answer_delta`` (the final answer's text, as the solver writes it)
        as they happen; the final answer is the return value.
        """
        flow = {semconv.MODE: str(plan.mode), semconv.CACHE: "off"}
        with tracing.workflow(f"divconq.{plan.mode}", flow) as span:
            response = await self._run_solve(plan, request_id=request_id, events=events)
            tracing.record_run(span, len(response.subquestions), response.usage.total)
            return response

    async def _run_solve(
        self, plan: Plan, *, request_id: str, events: EventSink | None
    ) -> SolveResponse:
        mode = plan.mode
        assert mode is not None, "a /decompose plan cannot be solved"
        run = self._run(request_id, plan, events)
        # Streamed requests report progress as it happens: those run every stage.
        parts = (
            solve_key(self._settings, self._decomposer.model_name, plan)
            if events is None and self._cache is not None
            else None
        )
        if parts is not None and self._cache is not None:
            entry = await self._cache.get("solve", plan.cache, parts)
            tracing.annotate(semconv.CACHE, "miss" if entry is None else "hit")
            if entry is not None:
                return replayed(SolveResponse.model_validate(entry), request_id, run.elapsed_ms)
        result = await self._solve_now(run, mode)
        if parts is not None and self._cache is not None:
            await self._cache.put("solve", plan.cache, parts, result.model_dump(mode="json"))
        return result

    async def _solve_now(self, run: Run, mode: Mode) -> SolveResponse:
        plan, request_id = run.plan, run.request_id
        steps = {
            "static": self._static,
            "hinted": self._hinted,
            "socratic": self._socratic,
            "direct": self._direct,
        }[mode]
        subquestions, final_messages = await steps(run)
        # A streamed request gets the final answer as it is written.
        stream = AnswerStream(run) if run.events is not None else None
        final = await self._solve(run, final_messages, "final", stream.write if stream else None)
        answer_text = final.text.strip()
        if stream is not None:
            stream.finish(answer_text)
        self._metrics.subquestions.labels(mode).observe(len(subquestions))
        decomposer, solver = run.decomposer.usage, run.solver.usage
        return SolveResponse(
            id=request_id,
            mode=mode,
            answer=extract_answer(answer_text, plan.question),
            answer_text=answer_text,
            subquestions=subquestions,
            usage=SolveUsage(
                decomposer=decomposer,
                solver=solver,
                total=TotalUsage(
                    prompt_tokens=decomposer.prompt_tokens + solver.prompt_tokens,
                    completion_tokens=decomposer.completion_tokens + solver.completion_tokens,
                    cost_usd=decomposer.cost_usd + solver.cost_usd,
                ),
            ),
            latency_ms=run.elapsed_ms,
        )

    async def decompose(self, plan: Plan, *, request_id: str) -> DecomposeResponse:
        """Run a ``/decompose`` plan: the subquestions, nothing solved."""
        with tracing.workflow("divconq.decompose", {semconv.MODE: "decompose"}) as span:
            response = await self._run_decompose(plan, request_id=request_id)
            usage = response.usage.decomposer
            tracing.record_run(span, len(response.subquestions), usage)
            return response

    async def _run_decompose(self, plan: Plan, *, request_id: str) -> DecomposeResponse:
        run = self._run(request_id, plan)
        subs = await self._decompose_static(run)
        return DecomposeResponse(
            id=request_id,
            subquestions=subs,
            repeats_dropped=run.repeats_dropped,
            usage=DecomposeUsage(decomposer=run.decomposer.usage),
            latency_ms=run.elapsed_ms,
        )
