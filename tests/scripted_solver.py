"""``ScriptedSolver``: a model server in process, for the fast tier's upstream calls.

Each request it gets is answered by the next behaviour of its script, in the
OpenAI-compatible or the Anthropic format, whole or streamed; ``transport``
routes an app's upstream calls to the solvers named by their host
(``tests/fakes.py``'s ``serve`` installs it).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx2


class ScriptedSolver:
    """A model server in process: each request gets the next behaviour (the last repeats).

    Behaviours: ok, nousage, anthropic, "answer:<text>", 400, 429, 500, 503,
    echo401, badjson, timeout (the client's read timeout), connect (refused),
    reset (dropped mid-response), slow (``delay_s``, then ok), block (waits
    for ``release``, then ok), trickle (ok, but a streamed reply holds its last
    piece until ``release``; a whole one waits for it), cutoff (a streamed
    reply dropped after two pieces; a whole one: reset), nostream (400 to a
    streamed request, ok to a whole one). A request that asks
    for ``stream`` gets the replies these end in as server-sent events, a word
    at a time, in its API's format. Records paths,
    headers, bodies, and the most requests in flight at once.
    """

    PROMPT_TOKENS = 11

    def __init__(self, *script: str, retry_after: str = "0", delay_s: float = 5.0) -> None:
        self.script = list(script) or ["ok"]
        self.retry_after = retry_after
        self.delay_s = delay_s
        self.release = asyncio.Event()
        self._hit = asyncio.Condition()
        self.hits = 0
        self.paths: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.bodies: list[dict[str, Any]] = []
        self.active = 0
        self.max_active = 0
        # Streamed replies whose body is still being written (or waiting).
        self.open_streams = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def _ok(self, text: str = "The answer is 7.", usage: bool = True) -> httpx2.Response:
        body: dict[str, Any] = {
            "choices": [{"message": {"content": text}, "finish_reason": "stop"}],
        }
        if usage:
            body["usage"] = {"prompt_tokens": self.PROMPT_TOKENS, "completion_tokens": 5}
        return httpx2.Response(200, json=body)

    async def __call__(self, request: httpx2.Request) -> httpx2.Response:
        behaviour = self.script[min(self.hits, len(self.script) - 1)]
        self._loop = asyncio.get_running_loop()
        self.hits += 1
        self.paths.append(request.url.raw_path.decode())
        self.headers.append({k.lower(): v for k, v in request.headers.items()})
        self.bodies.append(json.loads(request.content or b"{}"))
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        async with self._hit:
            self._hit.notify_all()
        try:
            return await self._behave(behaviour, request)
        finally:
            self.active -= 1

    def _streamed(self, behaviour: str) -> httpx2.Response | None:
        """A streamed reply for ``behaviour``; None where it has none (errors, stalls)."""
        if behaviour in ("ok", "slow", "block", "trickle", "nousage", "cutoff"):
            text = "The answer is 7."
        elif behaviour.startswith("answer:"):
            text = behaviour.removeprefix("answer:")
        elif behaviour == "anthropic":
            return self._sse(_anthropic_events("The answer is 9."))
        else:
            return None
        pieces = re.findall(r"\s*\S+", text) or [text]
        events: list[Any] = [
            {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
            for piece in pieces
        ]
        if behaviour == "trickle":
            events.insert(-1, None)  # the last piece waits for ``release``
        if behaviour == "cutoff":
            return self._sse([*events[:2], httpx2.RemoteProtocolError("scripted cut-off")])
        events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if behaviour != "nousage":
            usage = {"prompt_tokens": self.PROMPT_TOKENS, "completion_tokens": 5}
            events.append({"choices": [], "usage": usage})
        events.append("[DONE]")
        return self._sse(events)

    def _sse(self, events: list[Any]) -> httpx2.Response:
        async def body() -> AsyncIterator[bytes]:
            self.open_streams += 1
            try:
                for event in events:
                    if event is None:
                        await self.release.wait()
                        continue
                    if isinstance(event, Exception):
                        raise event
                    data = event if isinstance(event, str) else json.dumps(event)
                    yield f"data: {data}\n\n".encode()
            finally:
                self.open_streams -= 1

        return httpx2.Response(200, content=body(), headers={"content-type": "text/event-stream"})

    def release_from_thread(self) -> None:
        """Set ``release`` from outside the serving event loop (a live server's thread)."""
        assert self._loop is not None, "no request has arrived yet"
        self._loop.call_soon_threadsafe(self.release.set)

    async def until_hits(self, n: int) -> None:
        """Wait until ``n`` requests have arrived."""
        async with self._hit:
            await self._hit.wait_for(lambda: self.hits >= n)

    async def _behave(self, behaviour: str, request: httpx2.Request) -> httpx2.Response:
        stream = bool(json.loads(request.content or b"{}").get("stream"))
        if behaviour == "nostream":  # an older server: no "stream_options" here
            return httpx2.Response(400, json={"error": "stream_options"}) if stream else self._ok()
        if behaviour == "slow":
            await asyncio.sleep(self.delay_s)
        if behaviour == "block" or (behaviour == "trickle" and not stream):
            await self.release.wait()
        if stream and (streamed := self._streamed(behaviour)) is not None:
            return streamed
        if behaviour in ("ok", "slow", "block", "trickle"):
            return self._ok()
        if behaviour.startswith("answer:"):
            return self._ok(behaviour.removeprefix("answer:"))
        if behaviour == "nousage":
            return self._ok(usage=False)
        if behaviour == "anthropic":
            return httpx2.Response(200, json=ANTHROPIC_REPLY)
        if behaviour in ("400", "500", "503"):
            return httpx2.Response(int(behaviour), json={"error": behaviour})
        if behaviour == "429":
            return httpx2.Response(
                429, json={"error": "slow down"}, headers={"Retry-After": self.retry_after}
            )
        if behaviour == "echo401":
            auth = request.headers.get("authorization", "")
            return httpx2.Response(401, json={"error": f"invalid key {auth}"})
        if behaviour == "badjson":
            return httpx2.Response(200, content=b"{not json")
        if behaviour == "timeout":
            raise httpx2.ReadTimeout("scripted stall", request=request)
        if behaviour == "connect":
            raise httpx2.ConnectError("scripted refusal", request=request)
        if behaviour in ("reset", "cutoff"):
            raise httpx2.RemoteProtocolError("scripted reset", request=request)
        raise AssertionError(behaviour)


# The Messages API's whole reply (what the streamed one adds up to).
ANTHROPIC_REPLY = {
    "type": "message",
    "content": [{"type": "text", "text": "The answer is 9."}],
    "stop_reason": "end_turn",
    "usage": {"input_tokens": 21, "output_tokens": 6},
}


def _anthropic_events(text: str) -> list[Any]:
    """The Messages API's stream of one text reply."""
    return [
        {"type": "message_start", "message": {"usage": {"input_tokens": 21, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        *(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}
            for t in re.findall(r"\s*\S+", text)
        ),
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 6},
        },
        {"type": "message_stop"},
    ]


def transport(solvers: dict[str, ScriptedSolver]) -> httpx2.MockTransport:
    """One transport for every upstream: requests go to the solver named by their host."""

    async def route(request: httpx2.Request) -> httpx2.Response:
        host = request.url.host.removesuffix(".test")
        if host not in solvers:
            raise httpx2.ConnectError(f"nothing at {request.url.host}", request=request)
        return await solvers[host](request)

    return httpx2.MockTransport(route)
