"""``openai`` solver: any OpenAI-compatible ``/chat/completions`` endpoint.

OpenAI itself, vLLM (``vllm serve``), TGI, Ollama (``/v1``), llama.cpp server,
or another divconq's ``/v1``. A streamed call (``on_text``) asks for
``stream`` with ``stream_options.include_usage``, so its usage is the server's
own count, as a whole reply's is. A server that refuses those fields (400,
404, 415 or 422 before any text) gets whole calls from then on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from service.core.completion import ChatCall, Completion, TextSink
from service.core.errors import UpstreamInvalidResponse, UpstreamStatusError
from service.core.http_calls import Endpoint, post_json, usage_of
from service.core.http_stream import post_events
from service.core.settings import Settings, SolverSettings
from service.solver.base import SolverDeps, call_timeout, register

log = logging.getLogger(__name__)

# What a server that does not take "stream" or "stream_options" answers.
REFUSED_STREAM = frozenset({400, 404, 415, 422})


@register("openai")
class OpenAIChatSolver:
    def __init__(
        self, name: str, profile: SolverSettings, settings: Settings, deps: SolverDeps
    ) -> None:
        if not profile.base_url:
            raise ValueError(f"solver profile {name!r}: backend {profile.backend!r} needs base_url")
        self._profile = profile
        self.model_name = settings.solver_model(profile)
        self._max_tokens = settings.solver_tokens(profile)
        self._stop = settings.solver_stop(profile)
        key = profile.api_key
        self._key = key.get_secret_value() if key is not None else None
        # Until the server refuses a streamed call.
        self._streams = True
        self._to = Endpoint(
            deps.http, self.endpoint(profile.base_url.rstrip("/")), call_timeout(profile)
        )

    def endpoint(self, base_url: str) -> str:
        return base_url + "/chat/completions"

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    def payload(self, messages: Sequence[dict[str, str]]) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model_name,
            "messages": list(messages),
            "max_tokens": self._max_tokens,
            "temperature": self._profile.temperature,
        }
        if self._stop:
            payload["stop"] = self._stop
        return payload

    def _headers(self, request_id: str) -> dict[str, str]:
        headers = {"X-Request-ID": request_id}
        if self._key is not None:
            headers.update(self.auth_headers(self._key))
        return headers

    async def chat(self, call: ChatCall) -> Completion:
        if call.on_text is not None and self._streams:
            try:
                return await self._streamed(call.messages, call.request_id, call.on_text)
            except UpstreamStatusError as exc:
                if exc.status not in REFUSED_STREAM or exc.mid_stream:
                    raise
                # A server that refuses the streaming fields (an older one may not
                # know stream_options) answers whole from now on.
                self._streams = False
                log.warning(
                    "solver refused a streamed call (HTTP %d); answering whole from now on",
                    exc.status,
                    extra={"model": self.model_name},
                )
        body = await post_json(
            self._to, self.payload(call.messages), self._headers(call.request_id)
        )
        try:
            choice = body["choices"][0]
            text = choice["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise UpstreamInvalidResponse("returned no message") from None
        usage = usage_of(body)
        return Completion(
            str(text),
            *(usage or (0, 0)),
            str(choice.get("finish_reason")),
            usage_reported=usage is not None,
        )

    async def _streamed(
        self, messages: Sequence[dict[str, str]], request_id: str, on_text: TextSink
    ) -> Completion:
        """The reply as ``chat.completion.chunk`` events, each piece of text passed on."""
        payload = {
            **self.payload(messages),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        parts: list[str] = []
        finish: str | None = None
        usage: tuple[int, int] | None = None
        async for chunk in post_events(self._to, payload, self._headers(request_id)):
            if isinstance(chunk.get("error"), dict):
                # vLLM and others report a failure that came after the headers so.
                error = chunk["error"]
                code = error.get("code")
                failure = UpstreamStatusError(
                    f"failed mid-stream: {str(error.get('message', ''))[:200]}",
                    status=code if isinstance(code, int) else 500,
                )
                failure.mid_stream = True
                raise failure
            if chunk.get("usage"):
                usage = usage_of(chunk)
            for choice in chunk.get("choices") or ():
                if not isinstance(choice, dict):
                    raise UpstreamInvalidResponse("streamed a malformed choice")
                delta = choice.get("delta") or {}
                piece = delta.get("content") if isinstance(delta, dict) else None
                if isinstance(piece, str) and piece:
                    parts.append(piece)
                    on_text(piece)
                finish = choice.get("finish_reason") or finish
        if finish is None and not parts:
            raise UpstreamInvalidResponse("streamed no message")
        if usage is None:
            usage_of({})  # logs that the tokens will be estimated
        return Completion(
            "".join(parts),
            *(usage or (0, 0)),
            str(finish or "stop"),
            usage_reported=usage is not None,
        )
