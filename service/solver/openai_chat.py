"""``openai`` solver: any OpenAI-compatible ``/chat/completions`` endpoint.

OpenAI itself, vLLM (``vllm serve``), TGI, Ollama (``/v1``), llama.cpp server,
or another divconq's ``/v1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from service.core.completion import Completion
from service.core.errors import UpstreamInvalidResponse
from service.core.http_calls import post_json, usage_of
from service.core.settings import Settings, SolverSettings
from service.solver.base import SolverDeps, call_timeout, register


@register("openai")
class OpenAIChatSolver:
    def __init__(
        self, name: str, profile: SolverSettings, settings: Settings, deps: SolverDeps
    ) -> None:
        if not profile.base_url:
            raise ValueError(f"solver profile {name!r}: backend {profile.backend!r} needs base_url")
        self._profile = profile
        self._http = deps.http
        self.model_name = settings.solver_model(profile)
        self._max_tokens = settings.solver_tokens(profile)
        self._stop = settings.solver_stop(profile)
        self._url = self.endpoint(profile.base_url.rstrip("/"))
        key = profile.api_key
        self._key = key.get_secret_value() if key is not None else None
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
