"""A streamed POST to a model server: its server-sent events, as JSON objects.

The streamed twin of ``service.core.http_calls.post_json``, with the same
failure mapping (timeouts, refused or dropped connections, error statuses,
events that are not JSON objects). Solver
backends that can stream (OpenAI-compatible, Azure, Anthropic) read their
reply's text from it as the server writes it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx2

from service.core.errors import UpstreamInvalidResponse
from service.core.http_calls import (
    Endpoint,
    bounded,
    secrets_of,
    status_error,
    transport_error,
)

DONE = "[DONE]"


async def post_events(
    to: Endpoint, payload: dict[str, Any], headers: dict[str, str]
) -> AsyncIterator[dict[str, Any]]:
    """Each event's JSON data as it arrives, until ``[DONE]`` or the end of the body.

    The read timeout bounds the wait for each piece, not the whole reply.
    """
    where = to.where
    secrets = secrets_of(headers)
    try:
        async with to.http.stream(
            "POST", to.url, json=payload, headers=headers, timeout=bounded(to.timeout)
        ) as resp:
            if resp.status_code >= 400:
                text = (await resp.aread()).decode(errors="replace")
                raise status_error(where, resp.status_code, text, resp.headers, secrets)
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue  # event names, comments, keep-alives, blank separators
                data = line.removeprefix("data:").strip()
                if data == DONE:
                    return
                try:
                    event = json.loads(data)
                except json.JSONDecodeError:
                    raise UpstreamInvalidResponse(f"at {where} streamed invalid JSON") from None
                if not isinstance(event, dict):
                    raise UpstreamInvalidResponse(f"at {where} streamed a non-object event")
                yield event
    except httpx2.TransportError as exc:
        raise transport_error(where, exc) from None
