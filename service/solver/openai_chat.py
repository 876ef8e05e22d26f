"""``openai`` solver: any OpenAI-compatible ``/chat/completions`` endpoint.

OpenAI itself, vLLM (``vllm serve``), TGI, Ollama (``/v1``), llama.cpp server,
and by default this service's own ``/v1`` serving the embedded model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from service.completion import Completion
from service.errors import UpstreamError
from service.http_calls import post_json, usage_of
from service.settings import Settings
from service.solver.base import register


@register("openai")
class OpenAIChatSolver:
    def __init__(self, settings: Settings, http: httpx.AsyncClient) -> None:
        s = settings.solver
        self._settings = s
        self._http = http
        self._url = settings.solver_base_url + "/chat/completions"
        self.model_name = settings.solver_model_name
        self._max_tokens = settings.solver_max_tokens
        self._timeout = httpx.Timeout(
            s.read_timeout_s, connect=s.connect_timeout_s, pool=s.connect_timeout_s
        )

    async def chat(
        self, messages: Sequence[dict[str, str]], *, request_id: str, stage: str
    ) -> Completion:
        headers = {"X-Request-ID": request_id}
        if self._settings.api_key is not None:
            headers["Authorization"] = f"Bearer {self._settings.api_key.get_secret_value()}"
        payload: dict[str, Any] = {
            "model": self.model_name,
            "messages": list(messages),
            "max_tokens": self._max_tokens,
            "temperature": self._settings.temperature,
        }
        if self._settings.stop:
            payload["stop"] = self._settings.stop
        body = await post_json(
            self._http,
            self._url,
            payload,
            headers=headers,
            timeout=self._timeout,
            stage=stage,
            role="solver",
        )
        try:
            choice = body["choices"][0]
            text = choice["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise UpstreamError(
                f"solver returned no message during '{stage}'",
                stage=stage,
                kind="invalid_response",
            ) from None
        prompt_tokens, completion_tokens = usage_of(body)
        return Completion(
            str(text), prompt_tokens, completion_tokens, str(choice.get("finish_reason"))
        )
