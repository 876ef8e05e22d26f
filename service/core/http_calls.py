"""One POST to a model server, with every failure mapped to a typed ``UpstreamError``.

Shared by the HTTP decomposer and every HTTP solver, so timeouts, refused
connections, error statuses and bad JSON read the same whichever backend
raised them. (Every call of a traced request carries its trace: the pooled
client's request hook writes it, ``service.observability.client_trace``.)
Messages name the server, never the key; the caller that knows why it
called (the pipeline) adds the stage and role (``UpstreamError.during``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx2

from service.core.deadline import remaining
from service.core.errors import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamInvalidResponse,
    UpstreamStatusError,
    UpstreamTimeout,
)

log = logging.getLogger(__name__)

_SECRET_HEADERS = {"authorization", "api-key", "x-api-key"}


def where_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def bounded(timeout: httpx2.Timeout) -> httpx2.Timeout:
    """Never wait on one call past the request's deadline."""
    left = remaining()
    if left is None:
        return timeout
    return httpx2.Timeout(
        connect=min(timeout.connect or left, left),
        read=min(timeout.read or left, left),
        write=min(timeout.write or left, left),
        pool=min(timeout.pool or left, left),
    )


def secrets_of(headers: dict[str, str]) -> list[str]:
    """The secret values ``headers`` carry (keys), to keep out of error messages."""
    return [v.split()[-1] for k, v in headers.items() if k.lower() in _SECRET_HEADERS]


def transport_error(where: str, exc: httpx2.TransportError) -> UpstreamError:
    """A failed exchange: timed out, or refused, reset, or closed mid-response (the
    next attempt may work)."""
    if isinstance(exc, httpx2.TimeoutException):
        return UpstreamTimeout(f"at {where} timed out ({type(exc).__name__})")
    return UpstreamConnectError(f"at {where} unreachable ({type(exc).__name__})")


def status_error(
    where: str, status: int, text: str, headers: httpx2.Headers, secrets: list[str]
) -> UpstreamStatusError:
    # Some servers echo the key they rejected: never pass it on.
    excerpt = " ".join(text.split())[:200]
    for secret in secrets:
        excerpt = excerpt.replace(secret, "***")
    return UpstreamStatusError(
        f"at {where} returned HTTP {status}: {excerpt}",
        status=status,
        retry_after_s=_retry_after(headers.get("retry-after")),
    )


@dataclass(frozen=True)
class Endpoint:
    """Where a backend's calls go: the app's pooled client, a URL, per-call timeouts."""

    http: httpx2.AsyncClient
    url: str
    timeout: httpx2.Timeout

    @property
    def where(self) -> str:
        return where_of(self.url)


async def post_json(
    to: Endpoint, payload: dict[str, Any], headers: dict[str, str]
) -> dict[str, Any]:
    """The JSON object a model server answered; a typed ``UpstreamError`` otherwise."""
    where = to.where
    secrets = secrets_of(headers)
    try:
        resp = await to.http.post(
            to.url, json=payload, headers=headers, timeout=bounded(to.timeout)
        )
    except httpx2.TransportError as exc:
        raise transport_error(where, exc) from None
    if resp.status_code >= 400:
        raise status_error(where, resp.status_code, resp.text, resp.headers, secrets)
    try:
        body = resp.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UpstreamInvalidResponse(f"at {where} returned invalid JSON") from None
    if not isinstance(body, dict):
        raise UpstreamInvalidResponse(f"at {where} returned a non-object body")
    return body


def usage_of(
    body: dict[str, Any], prompt: str = "prompt_tokens", completion: str = "completion_tokens"
) -> tuple[int, int] | None:
    """(prompt, completion) tokens from a response's ``usage``; None if absent or malformed
    (the pipeline then estimates them)."""
    usage = body.get("usage")
    if isinstance(usage, dict):
        counts = usage.get(prompt), usage.get(completion)
        if all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
            return int(counts[0]), int(counts[1])  # type: ignore[arg-type]
    log.info("model response carried no usable usage; estimating its tokens")
    return None
