"""``anthropic`` solver: the Anthropic Messages API (``POST /v1/messages``).

``base_url`` defaults to ``https://api.anthropic.com/v1``. The system prompt
is a top-level field, ``max_tokens`` is required, the key goes in
``x-api-key``, and usage is ``input_tokens`` / ``output_tokens``. A streamed
call (``on_text``) reads the Messages API's events: ``message_start`` (input
tokens), ``content_block_delta`` (text), ``message_delta`` (stop reason,
output tokens).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from service.core.completion import ChatCall, Completion, TextSink
from service.core.errors import UpstreamInvalidResponse, UpstreamStatusError
from service.core.http_calls import Endpoint, post_json, usage_of
from service.core.http_stream import post_events
from service.core.settings import Settings, SolverSettings
from service.solver.base import SolverDeps, call_timeout, register, split_system

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_BASE_URL = "https://api.anthropic.com/v1"


@register("anthropic")
class AnthropicSolver:
    def __init__(
        self, name: str, profile: SolverSettings, settings: Settings, deps: SolverDeps
    ) -> None:
        self._profile = profile
        self.model_name = settings.solver_model(profile)
        self._max_tokens = settings.solver_tokens(profile)
        url = (profile.base_url or DEFAULT_BASE_URL).rstrip("/") + "/messages"
        self._key = profile.api_key.get_secret_value() if profile.api_key else None
        self._to = Endpoint(deps.http, url, call_timeout(profile))

    def _payload(self, messages: Sequence[dict[str, str]]) -> dict[str, Any]:
        system, turns = split_system(messages)
        payload: dict[str, Any] = {
            "model": self.model_name,
            "max_tokens": self._max_tokens,
            "messages": turns,
            "temperature": self._profile.temperature,
        }
        if system:
            payload["system"] = system
        if self._profile.stop:
            payload["stop_sequences"] = self._profile.stop
        return payload

    def _headers(self, request_id: str) -> dict[str, str]:
        headers = {"X-Request-ID": request_id, "anthropic-version": ANTHROPIC_VERSION}
        if self._key is not None:
            headers["x-api-key"] = self._key
        return headers

    async def chat(self, call: ChatCall) -> Completion:
        if call.on_text is not None:
            return await self._streamed(call.messages, call.request_id, call.on_text)
        body = await post_json(
            self._to, self._payload(call.messages), self._headers(call.request_id)
        )
        content = body.get("content")
        if not isinstance(content, list):
            raise UpstreamInvalidResponse("returned no content")
        text = "".join(
            str(block.get("text", ""))
            for block in content
            if isinstance(block, dict) and block.get("type") == "text"
        )
        usage = usage_of(body, "input_tokens", "output_tokens")
        return Completion(
            text,
            *(usage or (0, 0)),
            str(body.get("stop_reason") or "stop"),
            usage_reported=usage is not None,
        )

    async def _streamed(
        self, messages: Sequence[dict[str, str]], request_id: str, on_text: TextSink
    ) -> Completion:
        parts: list[str] = []
        counts: dict[str, int] = {}
        stop_reason: str | None = None
        started = False
        payload = {**self._payload(messages), "stream": True}
        async for event in post_events(self._to, payload, self._headers(request_id)):
            kind = event.get("type")
            if kind == "error":
                error = event.get("error") or {}
                overloaded = isinstance(error, dict) and error.get("type") == "overloaded_error"
                raise UpstreamStatusError(
                    f"failed mid-stream: {str(error)[:200]}", status=529 if overloaded else 500
                )
            if kind == "message_start":
                started = True
                message = event.get("message") or {}
                counts |= _counts(message.get("usage") if isinstance(message, dict) else None)
            elif kind == "content_block_delta":
                delta = event.get("delta") or {}
                piece = delta.get("text") if isinstance(delta, dict) else None
                if delta.get("type") == "text_delta" and isinstance(piece, str) and piece:
                    parts.append(piece)
                    on_text(piece)
            elif kind == "message_delta":
                delta = event.get("delta") or {}
                stop_reason = (delta.get("stop_reason") if isinstance(delta, dict) else None) or (
                    stop_reason
                )
                counts |= _counts(event.get("usage"))
        if not started:
            raise UpstreamInvalidResponse("streamed no message")
        usage = usage_of({"usage": counts}, "input_tokens", "output_tokens")
        return Completion(
            "".join(parts),
            *(usage or (0, 0)),
            str(stop_reason or "stop"),
            usage_reported=usage is not None,
        )


def _counts(usage: object) -> dict[str, int]:
    """The token counts an event carries (Anthropic splits them over two events)."""
    if not isinstance(usage, dict):
        return {}
    return {
        k: v
        for k, v in usage.items()
        if k in ("input_tokens", "output_tokens") and isinstance(v, int) and not isinstance(v, bool)
    }
