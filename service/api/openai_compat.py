"""A minimal OpenAI-compatible API over the in-process engine.

``POST /v1/chat/completions`` and ``GET /v1/models`` let the embedded model act
as the default solver (over real HTTP, like any hosted one) with no network
and no key, and let operators poke the model with any OpenAI client.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from service.api.auth import require_api_key
from service.api.disconnect import cancel_on_disconnect
from service.calculator import generate_with_calculator
from service.completion import Completion
from service.engine import EmbeddedEngine
from service.errors import NotReady
from service.state import get_services

# Behind the API keys too when they are set: it serves the model to anyone.
router = APIRouter(prefix="/v1", tags=["openai"], dependencies=[Depends(require_api_key)])


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(BaseModel):
    model: str | None = None
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(0.0, ge=0.0)
    stop: str | list[str] | None = None


def _engine(request: Request) -> EmbeddedEngine:
    engine = get_services(request).engine
    if engine is None or not engine.ready:
        raise NotReady("embedded model not loaded yet", headers={"Retry-After": "10"})
    return engine


@router.get("/models")
async def models(request: Request) -> dict[str, Any]:
    engine = _engine(request)
    return {
        "object": "list",
        "data": [{"id": engine.served_name, "object": "model", "owned_by": "divconq"}],
    }


async def _reply(
    request: Request, engine: EmbeddedEngine, body: ChatRequest, completion_id: str
) -> Completion:
    """One chat reply; with the calculator on, every annotation it closes is computed."""
    services = get_services(request)
    settings = services.settings
    prompt = engine.render_chat([m.model_dump() for m in body.messages])
    stop = [body.stop] if isinstance(body.stop, str) else (body.stop or [])
    max_tokens = body.max_completion_tokens or body.max_tokens or settings.solver_max_tokens
    calls = 0

    async def generate(text: str, budget: int, stops: Sequence[str]) -> Completion:
        nonlocal calls
        calls += 1
        return await engine.generate(
            text,
            # vLLM wants a unique id per generation.
            request_id=completion_id if calls == 1 else f"{completion_id}-{calls}",
            max_tokens=budget,
            temperature=body.temperature,
            stop=stops,
            # A chat reply ends with its turn.
            stop_token_ids=engine.turn_end_ids,
        )

    if not settings.calculator:
        return await generate(prompt, max_tokens, stop)
    run = await generate_with_calculator(generate, prompt, max_tokens=max_tokens, stop=stop)
    for outcome in run.outcomes:
        services.metrics.calculator.labels(outcome).inc()
    return run.completion


@router.post("/chat/completions")
async def chat_completions(body: ChatRequest, request: Request) -> dict[str, Any]:
    engine = _engine(request)
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    gen = await cancel_on_disconnect(request, _reply(request, engine, body, completion_id))
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": engine.served_name,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": gen.text},
                "finish_reason": gen.finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": gen.prompt_tokens,
            "completion_tokens": gen.completion_tokens,
            "total_tokens": gen.prompt_tokens + gen.completion_tokens,
        },
    }
