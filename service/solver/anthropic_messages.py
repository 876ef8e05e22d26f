"""``anthropic`` solver: the Anthropic Messages API (``POST /v1/messages``).

``base_url`` defaults to ``https://api.anthropic.com/v1``. The system prompt
is a top-level field, ``max_tokens`` is required, the key goes in
``x-api-key``, and usage is ``input_tokens`` / ``output_tokens``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from service.core.completion import Completion
from service.core.errors import UpstreamInvalidResponse
from service.core.http_calls import post_json, usage_of
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
        self._http = deps.http
        self.model_name = settings.solver_model(profile)
        self._max_tokens = settings.solver_tokens(profile)
        self._url = (profile.base_url or DEFAULT_BASE_URL).rstrip("/") + "/messages"
        self._key = profile.api_key.get_secret_value() if profile.api_key else None
        self._timeout = call_timeout(profile)

    async def chat(self, messages: Sequence[dict[str, str]], *, request_id: str) -> Completion:
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
        headers = {"X-Request-ID": request_id, "anthropic-version": ANTHROPIC_VERSION}
        if self._key is not None:
            headers["x-api-key"] = self._key
        body = await post_json(
            self._http,
            self._url,
            payload,
            headers=headers,
            timeout=self._timeout,
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
            model=str(body.get("model") or ""),
            usage_reported=usage is not None,
        )
