"""``openai`` solver: any OpenAI-compatible ``/chat/completions`` endpoint.

OpenAI itself, vLLM (``vllm serve``), TGI, Ollama (``/v1``), llama.cpp server,
and by default this service's own ``/v1`` serving the embedded model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx2

from service.core.completion import Completion
from service.core.errors import UpstreamInvalidResponse
from service.core.http_calls import post_json, usage_of
from service.core.settings import Settings, SolverSettings
from service.solver.base import call_timeout, register


@register("openai")
class OpenAIChatSolver:
    def __init__(
        self, name: str, profile: SolverSettings, settings: Settings, http: httpx2.AsyncClient
    ) -> None:
        self._profile = profile
        self._http = http
        self.model_name = settings.solver_model(profile)
        self._max_tokens = settings.solver_tokens(profile)
        self._stop = settings.solver_stop(profile)
        self._url = self.endpoint(settings.solver_url(profile))
        api_key = profile.api_key
        if api_key is None and profile.base_url is None and settings.api_keys:
            # The embedded solver is our own /v1, which then wants a key too.
            api_key = settings.api_keys[0]
        self._key = api_key.get_secret_value() if api_key is not None else None
        self._timeout = call_timeout(profile)

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

    async def chat(self, messages: Sequence[dict[str, str]], *, request_id: str) -> Completion:
        headers = {"X-Request-ID": request_id}
        if self._key is not None:
            headers.update(self.auth_headers(self._key))
        body = await post_json(
            self._http,
            self._url,
            self.payload(messages),
            headers=headers,
            timeout=self._timeout,
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
            # The model the server says answered (the profile's model is reported
            # in usage and prices: ResilientSolver sets it).
            model=str(body.get("model") or ""),
            usage_reported=usage is not None,
        )
