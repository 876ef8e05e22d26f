"""The OpenAI-compatible API: the pipeline models and the embedded model.

``POST /v1/chat/completions`` serves two kinds of model, by the request's
``model``:

- a pipeline model (``DIVCONQ_PIPELINE_MODELS``: ``divconq-static`` ...) runs
  decompose-then-solve (``service/api/facade.py``): a drop-in for OpenAI
  clients;
- the embedded model (its own name, or no ``model``) answers raw: the code of
  the embedded solver (``service/embedded/chat.py``, calculator included)
  with the request's sampling, for operators to poke with any OpenAI client.

``GET /v1/models`` lists both.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from service.api import facade
from service.api.auth import require_api_key
from service.api.disconnect import cancel_on_disconnect
from service.api.errors import ERRORS, error_json
from service.api.openai_schemas import (
    ChatCompletion,
    ChatRequest,
    ChatUsage,
    Choice,
    ModelCard,
    ModelList,
    ReplyMessage,
    unsupported_field,
)
from service.api.request_record import record_of
from service.api.solving import FACADE_ENDPOINT
from service.api.state import get_services
from service.api.streaming import Emit, EventStream, sse
from service.core.completion import ChatCall, Completion
from service.core.errors import InvalidRequest, ModelNotFound
from service.core.input_limits import InputLimits
from service.core.schemas import ErrorResponse
from service.core.settings import Settings
from service.embedded.chat import EmbeddedChat, Sampling
from service.pipeline.budget import decomposer_window, refuse

# Behind the API keys too when they are set: it serves the model to anyone.
router = APIRouter(prefix="/v1", tags=["openai"], dependencies=[Depends(require_api_key)])

_STREAM = {
    "description": 'With "stream": true: chat.completion.chunk server-sent events (the '
    "text as the model writes it), then [DONE].",
    # One server-sent event: a chat.completion.chunk, an error, or [DONE].
    "content": {
        "text/event-stream": {
            "schema": {
                "type": "object",
                "properties": {"data": {"type": "string"}},
                "required": ["data"],
            }
        }
    },
}

_UNKNOWN_MODEL = {"model": ErrorResponse, "description": "Unknown model"}


def embedded_name(settings: Settings) -> str | None:
    """The embedded model's name at /v1, or None where it is not served here."""
    if settings.serve_openai_api and settings.decomposer.backend == "vllm":
        return settings.decomposer_model_name
    return None


@router.get("/models", response_model=ModelList, response_model_exclude_none=True)
async def models(request: Request) -> ModelList:
    """The pipeline models, and the embedded model where this service serves it."""
    settings = get_services(request).settings
    cards = [
        ModelCard(id=name, divconq_mode=mode) for name, mode in settings.pipeline_models.items()
    ]
    if (name := embedded_name(settings)) is not None:
        cards.append(ModelCard(id=name))
    return ModelList(data=cards)


async def _raw(body: ChatRequest, request: Request) -> ChatCompletion | EventStream:
    """The embedded model's own reply, no pipeline: the embedded solver's code, the
    request's sampling."""
    services = get_services(request)
    settings = services.settings
    chat = services.embedded
    model = chat.engine().served_name  # 503 before anything else while it loads
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    sampling = Sampling(
        max_tokens=body.max_completion_tokens or body.max_tokens or settings.solver_max_tokens,
        temperature=body.temperature or 0.0,
        stop=[body.stop] if isinstance(body.stop, str) else (body.stop or []),
    )
    messages = [{"role": m.role, "content": m.text} for m in body.messages]
    # As vLLM's own server: the prompt and the reply's cap must fit the window.
    if (window := decomposer_window(settings)) is not None:
        refuse("model", chat.prompt_tokens(messages), sampling.max_tokens, window, None)
    if body.stream:
        return _raw_stream(body, chat, messages, completion_id, sampling, model)
    gen = await cancel_on_disconnect(
        request, chat.reply(ChatCall(messages, completion_id), sampling)
    )
    return ChatCompletion(
        id=completion_id,
        created=int(time.time()),
        model=model,
        choices=[Choice(message=ReplyMessage(content=gen.text), finish_reason=gen.finish_reason)],
        usage=_usage(gen),
    )


def _usage(gen: Completion) -> ChatUsage:
    return ChatUsage(
        prompt_tokens=gen.prompt_tokens,
        completion_tokens=gen.completion_tokens,
        total_tokens=gen.prompt_tokens + gen.completion_tokens,
    )


def _raw_stream(
    body: ChatRequest,
    chat: EmbeddedChat,
    messages: list[dict[str, str]],
    completion_id: str,
    sampling: Sampling,
    model: str,
) -> EventStream:
    """The raw reply as ``chat.completion.chunk``s while the model writes it, as
    OpenAI streams: the role, the text, the finish, usage last when asked for."""
    created = int(time.time())
    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        data: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
        }
        if include_usage:
            data["usage"] = None  # on every chunk but the last, as OpenAI does
        return sse(None, json.dumps({**data, **extra}))

    def delta(content: dict[str, str], finish: str | None = None) -> bytes:
        return chunk([{"index": 0, "delta": content, "finish_reason": finish}])

    async def work(emit: Emit) -> None:
        emit(delta({"role": "assistant", "content": ""}))
        gen = await chat.reply(
            ChatCall(messages, completion_id, on_text=lambda text: emit(delta({"content": text}))),
            sampling,
        )
        emit(delta({}, gen.finish_reason))
        if include_usage:
            emit(chunk([], usage=_usage(gen).model_dump()))

    return EventStream(
        work, error=lambda exc: sse(None, error_json(exc)), close=lambda: sse(None, "[DONE]")
    )


@router.post(
    "/chat/completions",
    response_model=None,
    responses={
        **ERRORS,
        404: {"model": ErrorResponse, "description": "Unknown model"},
        200: {"model": ChatCompletion, **_STREAM},
    },
)
async def chat_completions(body: ChatRequest, request: Request) -> Response:
    """A chat completion: by the pipeline (a pipeline model) or the embedded model."""
    settings = get_services(request).settings
    mode = settings.pipeline_models.get(body.model or "")
    if mode is not None:
        record_of(request).endpoint = FACADE_ENDPOINT  # its 422s count as the facade's
    # The same limits on every model served here, before the model is picked.
    if (unsupported := unsupported_field(body)) is not None:
        raise InvalidRequest(unsupported)
    InputLimits.from_settings(settings).check_reply_tokens(
        max_tokens=body.max_tokens, max_completion_tokens=body.max_completion_tokens
    )
    embedded = embedded_name(settings)
    if mode is not None:
        answer = await facade.chat(body, mode, request)
    elif embedded is not None and body.model in (None, embedded):
        answer = await _raw(body, request)
    else:
        known = [*settings.pipeline_models, *([embedded] if embedded else [])]
        raise ModelNotFound(f"model {body.model!r} does not exist; available: {', '.join(known)}")
    if isinstance(answer, Response):
        return answer  # a stream
    # The extension field only where there is one (pipeline models).
    return JSONResponse(
        answer.model_dump(mode="json", exclude={"divconq"} if answer.divconq is None else None)
    )
