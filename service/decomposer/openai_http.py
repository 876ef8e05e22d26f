"""``openai`` decomposer: a running OpenAI-compatible server (e.g. ``vllm serve``).

For deployments that run the decomposer as a sidecar. It uses the plain
``/completions`` endpoint because decomposer prompts are few-shot
completions, not chats.
"""

from __future__ import annotations

import httpx2

from service.core.completion import Completion, PromptCall
from service.core.errors import UpstreamInvalidResponse
from service.core.http_calls import Endpoint, post_json, usage_of
from service.core.settings import Settings
from service.decomposer.base import register


@register("openai")
class OpenAIDecomposer:
    def __init__(self, settings: Settings, http: httpx2.AsyncClient) -> None:
        d = settings.decomposer
        if not d.base_url:
            raise ValueError("DIVCONQ_DECOMPOSER__BASE_URL is required for the 'openai' backend")
        self._settings = d
        self.model_name = settings.decomposer_model_name
        timeout = httpx2.Timeout(d.timeout_s, connect=min(5.0, d.timeout_s))
        self._to = Endpoint(http, d.base_url.rstrip("/") + "/completions", timeout)

    @property
    def ready(self) -> bool:
        return True

    @property
    def state(self) -> str:
        return "ready"

    async def start(self) -> None:
        return None

    async def complete(self, call: PromptCall) -> Completion:
        headers = {"X-Request-ID": call.request_id}
        if self._settings.api_key is not None:
            headers["Authorization"] = f"Bearer {self._settings.api_key.get_secret_value()}"
        payload = {
            # vLLM serves LoRA modules under their own names (--lora-modules).
            "model": call.adapter or self.model_name,
            "prompt": call.prompt,
            "max_tokens": call.max_tokens,
            "temperature": self._settings.temperature,
            "stop": list(call.stop) or None,
        }
        body = await post_json(self._to, payload, headers)
        try:
            choice = body["choices"][0]
            text = str(choice["text"])
        except (KeyError, IndexError, TypeError):
            raise UpstreamInvalidResponse("returned no choices") from None
        usage = usage_of(body)
        return Completion(
            text,
            *(usage or (0, 0)),
            str(choice.get("finish_reason")),
            usage_reported=usage is not None,
        )

    async def aclose(self) -> None:
        return None
