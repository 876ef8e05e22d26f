"""The pipeline behind OpenAI's chat API: ``model: "divconq-static"`` runs ``/solve``.

An OpenAI client (the SDK, LangChain, LiteLLM) changes only its base URL and
model name. The last user message is the question; system (and developer)
text and the earlier turns become the ``context``. The request is then a
``SolveRequest``, resolved by ``service.pipeline.plan.resolve`` like any other, and
admitted, deadlined, cancelled and counted as ``/solve`` is (endpoint label
``chat_completions``).

The answer is a standard ``chat.completion`` whose content is the final
answer text and whose ``usage`` holds the totals; the extension field
``divconq`` carries the subquestions and per-stage usage exactly as ``/solve``
returns them. With ``stream`` it is ``chat.completion.chunk``s: the role at
once, the final answer's text as the solver writes it, the finish, usage last
when ``stream_options.include_usage`` is set, then ``[DONE]``; a failure
after the stream began is an ``{"error": ...}`` event, which the openai SDK
raises as an ``APIError``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Coroutine
from typing import Any

from fastapi import Request
from pydantic import BaseModel, ValidationError

from service.api.disconnect import run_request, within_deadline
from service.api.errors import error_json
from service.api.openai_schemas import (
    ChatCompletion,
    ChatMessage,
    ChatRequest,
    ChatUsage,
    Choice,
    PipelineDetail,
    ReplyMessage,
)
from service.api.request_record import record_of
from service.api.solving import FACADE_ENDPOINT, log_fields, plan_request
from service.api.streaming import Emit, EventStream, sse
from service.core.errors import InvalidRequest
from service.core.schemas import AnswerDeltaEvent, SolveRequest, SolveResponse
from service.core.settings import Mode

_SPEAKERS = {"user": "User", "assistant": "Assistant", "tool": "Tool"}


def solve_request(body: ChatRequest, mode: Mode) -> SolveRequest:
    """The ``/solve`` request a chat request stands for (422 where it stands for none)."""
    users = [i for i, m in enumerate(body.messages) if m.role == "user"]
    if not users:
        raise InvalidRequest("messages: a pipeline model needs a user message (the question)")
    last = users[-1]
    question = body.messages[last].text
    try:
        return SolveRequest(
            question=question,
            context=_context([m for i, m in enumerate(body.messages) if i != last]),
            mode=mode,
            max_subquestions=body.max_subquestions,
            solver=body.solver,
            decomposer_adapter=body.decomposer_adapter,
            timeout_s=body.timeout_s,
        )
    except ValidationError as exc:
        where = {"question": "messages: the last user message"}
        raise InvalidRequest(
            "; ".join(
                f"{where.get(str(e['loc'][0]), e['loc'][0]) if e['loc'] else 'body'}: {e['msg']}"
                for e in exc.errors()
            )
        ) from None


def _context(messages: list[ChatMessage]) -> str | None:
    """System and developer text first, then the other turns as a transcript."""
    system = [m.text for m in messages if m.role in ("system", "developer") and m.text.strip()]
    turns = [
        f"{_SPEAKERS[m.role]}: {m.text}" for m in messages if m.role in _SPEAKERS and m.text.strip()
    ]
    parts = ["\n\n".join(system)] if system else []
    if turns:
        parts.append("Conversation so far:\n" + "\n".join(turns))
    return "\n\n".join(parts) or None


def _usage(result: SolveResponse) -> ChatUsage:
    total = result.usage.total
    return ChatUsage(
        prompt_tokens=total.prompt_tokens,
        completion_tokens=total.completion_tokens,
        total_tokens=total.prompt_tokens + total.completion_tokens,
    )


def _detail(result: SolveResponse) -> PipelineDetail:
    """The /solve answer's fields that ``PipelineDetail`` has, by name."""
    return PipelineDetail.model_validate(result, from_attributes=True)


async def chat(body: ChatRequest, mode: Mode, request: Request) -> ChatCompletion | EventStream:
    """A chat completion by the pipeline in ``mode``."""
    rec = record_of(request)
    rec.endpoint = FACADE_ENDPOINT
    rec.admit()  # 429 past the in-flight bound, as on /solve
    services, plan = await plan_request(solve_request(body, mode), request)
    request_id = rec.request_id

    def work() -> Coroutine[Any, Any, SolveResponse]:
        return services.pipeline.solve(plan, request_id=request_id)

    reply = _Reply(body, f"chatcmpl-{request_id}", int(time.time()))
    if body.stream:
        rec.log_fields = {"stream": True}

        async def stream(emit: Emit) -> None:
            # The role at once: the client sees the stream open before any model call.
            emit(reply.chunk({"role": "assistant", "content": ""}))

            def progress(name: str, data: BaseModel) -> None:
                # The final answer's text as the solver writes it; the rest of the
                # pipeline's progress rides on the last chunk (``divconq``).
                if isinstance(data, AnswerDeltaEvent):
                    emit(reply.chunk({"content": data.text}))

            result = await within_deadline(
                services.pipeline.solve(plan, request_id=request_id, events=progress),
                plan.timeout_s,
            )
            rec.log_fields = {"stream": True, **log_fields(result)}
            rec.result = result
            for event in reply.ending(result):
                emit(event)

        return EventStream(
            stream, error=lambda exc: sse(None, error_json(exc)), close=lambda: sse(None, "[DONE]")
        )
    result = await run_request(request, work(), plan.timeout_s)
    rec.log_fields = log_fields(result)
    rec.result = result
    return reply.completion(result)


class _Reply:
    """One chat completion's envelope: its id, time and model, whole or in chunks."""

    def __init__(self, body: ChatRequest, completion_id: str, created: int) -> None:
        self.id, self.created, self.model = completion_id, created, str(body.model)
        self.include_usage = bool(body.stream_options and body.stream_options.include_usage)

    def completion(self, result: SolveResponse) -> ChatCompletion:
        return ChatCompletion(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=[
                Choice(message=ReplyMessage(content=result.answer_text), finish_reason="stop")
            ],
            usage=_usage(result),
            divconq=_detail(result),
        )

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        data: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if self.include_usage:
            data["usage"] = None  # on every chunk but the last, as OpenAI does
        return sse(None, json.dumps({**data, **extra}))

    def chunk(self, delta: dict[str, str], finish: str | None = None, **extra: Any) -> bytes:
        return self._chunk([{"index": 0, "delta": delta, "finish_reason": finish}], **extra)

    def ending(self, result: SolveResponse) -> list[bytes]:
        """The chunks after the answer's text: the finish, then usage when asked
        for; the pipeline's detail rides on the last one."""
        detail = _detail(result).model_dump(mode="json")
        if not self.include_usage:
            return [self.chunk({}, "stop", divconq=detail)]
        usage = _usage(result).model_dump()
        return [self.chunk({}, "stop"), self._chunk([], usage=usage, divconq=detail)]
