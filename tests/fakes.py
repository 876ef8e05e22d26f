"""The fast tier's doubles: the app in process, a fake decomposer, scripted solvers.

``serve(settings, solvers, decomposer)`` runs ``create_app`` through its test
seam: every upstream HTTP call goes to ``httpx2.MockTransport``, dispatched
by host to a ``ScriptedSolver``; the decomposer is a ``FakeDecomposer``. The
test client talks ASGI directly, so nothing listens on a socket and a test
takes milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import httpx2
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client.parser import text_string_to_metric_families

from service.api.app import create_app
from service.core.completion import Completion, PromptCall
from service.core.settings import Settings
from service.embedded.engine import Generation
from service.tenancy.store import LimitStore

KEY = "sk-live-test-51d2"
Q = "Tom has 3 apples and buys 4 more. How many apples does he have?"


def url_of(host: str) -> str:
    """The base URL a scripted solver answers at."""
    return f"http://{host}.test/v1"


def settings_for(solver_host: str = "solver", **extra: Any) -> Settings:
    """A remote default solver at ``solver_host``; the decomposer is faked by ``serve``."""
    solver = {
        "base_url": url_of(solver_host),
        "model": "big-solver",
        "api_key": KEY,
        "max_tokens": 8,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.05,
        "read_timeout_s": 5.0,
        **extra.pop("solver", {}),
    }
    return Settings(solver=solver, **extra)  # type: ignore[arg-type]


class Readiness:
    """``ready`` as a fake was made: ready, or still loading."""

    def __init__(self, ready: bool) -> None:
        self._ready = ready

    @property
    def ready(self) -> bool:
        return self._ready


class FakeEngine(Readiness):
    """The in-process engine as ``EmbeddedChat`` uses it, with scripted pieces of text.

    Each ``generate`` call writes the next piece (the last one repeats). A
    piece ending in ``>>`` stops there, as the engine stops at that stop
    string: the calculator then computes the annotation and asks for the next
    piece. ``render_chat`` renders messages as JSON, so a test reads back what
    the engine was sent (``messages``).
    """

    served_name = "gemma-3-270m"
    PROMPT_TOKENS = 30

    def __init__(self, *pieces: str, ready: bool = True) -> None:
        super().__init__(ready)
        self.pieces = list(pieces) or ["The answer is 7."]
        self.calls: list[dict[str, Any]] = []

    @property
    def dead(self) -> bool:
        return False

    @property
    def turn_end_ids(self) -> list[int]:
        return [106]

    def render_chat(self, messages: Sequence[dict[str, str]]) -> str:
        return json.dumps(list(messages)) + "\n"

    def count_tokens(self, prompt: str) -> int:
        """Its tokenizer: one token a word (what the budget check counts with)."""
        return len(prompt.split())

    def messages(self, call: int = 0) -> list[dict[str, str]]:
        """The chat messages of the ``call``-th generation (its rendered prompt)."""
        rendered: list[dict[str, str]] = json.loads(self.calls[call]["prompt"].split("\n")[0])
        return rendered

    async def generate(self, gen: Generation) -> Completion:
        piece = self.pieces[min(len(self.calls), len(self.pieces) - 1)]
        self.calls.append(
            {
                "prompt": gen.prompt,
                "request_id": gen.request_id,
                "max_tokens": gen.max_tokens,
                "stop": list(gen.stop),
                "stop_token_ids": list(gen.stop_token_ids),
            }
        )
        closes = piece.endswith(">>") and ">>" in gen.stop
        text = piece.removesuffix(">>") if closes else piece
        if gen.on_text is not None:
            for word in re.findall(r"\s*\S+", text):
                gen.on_text(word)
        return Completion(
            text,
            self.PROMPT_TOKENS,
            len(text.split()),
            stop_reason=">>" if closes else None,
            model=self.served_name,
        )


class FakeDecomposer(Readiness):
    """The ``Decomposer`` protocol with scripted texts (the last one repeats).

    ``engine``: a ``FakeEngine`` for the embedded solver and the raw /v1 model
    to run on, as the ``vllm`` decomposer's engine serves them.
    """

    model_name = "fake-decomposer"
    PROMPT_TOKENS = 50
    COMPLETION_TOKENS = 20

    def __init__(
        self,
        *texts: str,
        ready: bool = True,
        delay_s: float = 0.0,
        engine: FakeEngine | None = None,
    ) -> None:
        super().__init__(ready)
        self.texts = list(texts) or ["none"]
        self.engine = engine
        self.delay_s = delay_s
        self.calls: list[dict[str, Any]] = []
        self.closed = False

    @property
    def state(self) -> str:
        return "ready" if self._ready else "loading: starting the vLLM engine"

    async def start(self) -> None:
        return None

    async def complete(self, call: PromptCall) -> Completion:
        text = self.texts[min(len(self.calls), len(self.texts) - 1)]
        self.calls.append(dataclasses.asdict(call))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return Completion(text, self.PROMPT_TOKENS, self.COMPLETION_TOKENS)

    async def aclose(self) -> None:
        self.closed = True


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


@contextlib.asynccontextmanager
async def serve(
    settings: Settings,
    solvers: dict[str, ScriptedSolver] | ScriptedSolver | None = None,
    decomposer: FakeDecomposer | None = None,
    *,
    fake_decomposer: bool = True,
    tracer_provider: TracerProvider | None = None,
    limit_store: LimitStore | None = None,
) -> AsyncIterator[httpx.AsyncClient]:
    """The app in process, lifespan and all; yields a client speaking ASGI to it.

    ``tracer_provider``: where its spans go (tests/test_tracing.py); untraced without.
    """
    if isinstance(solvers, ScriptedSolver):
        solvers = {"solver": solvers}
    if decomposer is None and fake_decomposer:
        decomposer = FakeDecomposer()
    app = create_app(
        settings,
        transport=transport(solvers or {}),
        decomposer=decomposer,
        tracer_provider=tracer_provider,
        limit_store=limit_store,
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://divconq.test", timeout=30
        ) as client,
    ):
        yield client


async def solve(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post("/solve", json={"question": Q, "mode": "direct", **body})


def error_of(resp: httpx.Response, status: int, error_type: str | None = None) -> dict[str, Any]:
    """The error object of a JSON error response, checked for shape and leaks."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = resp.json()
    assert set(body) == {"error"}
    assert body["error"]["message"]
    assert "Traceback" not in resp.text
    assert KEY not in resp.text
    if error_type is not None:
        assert body["error"]["type"] == error_type
    return body["error"]


async def metric(client: httpx.AsyncClient, name: str, **labels: str) -> float:
    text = (await client.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0
