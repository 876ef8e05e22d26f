"""One POST to a model server, with every failure mapped to a ServiceError.

Shared by the HTTP decomposer and every HTTP solver, so timeouts, refused
connections, error statuses and bad JSON read the same whichever backend
raised them. Messages name the stage and the server, never the key.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import urlsplit

import httpx

from service.errors import UpstreamError, UpstreamTimeout

log = logging.getLogger(__name__)

_SECRET_HEADERS = {"authorization", "api-key", "x-api-key"}


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


async def post_json(
    client: httpx.AsyncClient,
    url: str,
    payload: dict[str, Any],
    *,
    headers: dict[str, str],
    timeout: httpx.Timeout,  # noqa: ASYNC109  httpx's per-phase timeouts, not a deadline
    stage: str,
    role: str,
) -> dict[str, Any]:
    where = _where(url)
    secrets = [v.split()[-1] for k, v in headers.items() if k.lower() in _SECRET_HEADERS]
    try:
        resp = await client.post(url, json=payload, headers=headers, timeout=timeout)
    except httpx.TimeoutException as exc:
        raise UpstreamTimeout(
            f"{role} at {where} timed out during '{stage}' ({type(exc).__name__})",
            stage=stage,
            kind="timeout",
        ) from None
    except httpx.TransportError as exc:
        raise UpstreamError(
            f"{role} at {where} unreachable during '{stage}' ({type(exc).__name__})",
            stage=stage,
            kind="connect_error",
        ) from None
    if resp.status_code >= 400:
        # A short, key-free excerpt helps ops tell a bad model name from an outage.
        # Some servers echo the key they rejected: never pass it on.
        excerpt = " ".join(resp.text.split())[:200]
        for secret in secrets:
            excerpt = excerpt.replace(secret, "***")
        raise UpstreamError(
            f"{role} at {where} returned HTTP {resp.status_code} during '{stage}': {excerpt}",
            stage=stage,
            kind="http_error",
        )
    try:
        body = resp.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UpstreamError(
            f"{role} at {where} returned invalid JSON during '{stage}'",
            stage=stage,
            kind="invalid_response",
        ) from None
    if not isinstance(body, dict):
        raise UpstreamError(
            f"{role} at {where} returned a non-object body",
            stage=stage,
            kind="invalid_response",
        )
    return body


def usage_of(body: dict[str, Any]) -> tuple[int, int]:
    """(prompt_tokens, completion_tokens) from an OpenAI-style ``usage``; 0 if absent."""
    usage = body.get("usage")
    if not isinstance(usage, dict):
        log.warning("model response carried no usage; counting 0 tokens")
        return 0, 0
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
