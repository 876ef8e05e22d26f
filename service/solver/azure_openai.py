"""``azure_openai`` solver: Azure OpenAI's chat completions.

Same body as OpenAI's; the deployment is in the path, ``api-version`` in the
query string and the key in an ``api-key`` header. ``base_url`` is the
resource endpoint (``https://NAME.openai.azure.com``), ``model`` the deployment.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from service.solver.base import register
from service.solver.openai_chat import OpenAIChatSolver


@register("azure_openai")
class AzureOpenAISolver(OpenAIChatSolver):
    def endpoint(self, base_url: str) -> str:
        deployment = quote(self.model_name, safe="")
        return (
            f"{base_url}/openai/deployments/{deployment}/chat/completions"
            f"?api-version={quote(self._profile.api_version)}"
        )

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"api-key": key}

    def payload(self, messages: Sequence[dict[str, str]]) -> dict[str, Any]:
        payload = super().payload(messages)
        del payload["model"]  # the deployment in the URL names it
        return payload
