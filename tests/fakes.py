"""The fast tier's doubles: the app in process, a fake engine and decomposer.

``serve(settings, solvers, decomposer)`` runs ``create_app`` through its test
seam: every upstream HTTP call goes to ``httpx2.MockTransport``, dispatched
by host to a ``ScriptedSolver`` (``tests/scripted_solver.py``, re-exported
here); the decomposer is a ``FakeDecomposer``. The test client talks ASGI
directly, so nothing listens on a socket and a test takes milliseconds.
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
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client.parser import text_string_to_metric_families

from service.api.app import create_app
from service.core.completion import Completion, PromptCall
from service.core.settings import Settings
from service.embedded.engine import Generation
from service.tenancy.store import LimitStore
from tests.scripted_solver import ScriptedSolver, transport

__all__ = [
    "KEY",
    "FakeDecomposer",
    "FakeEngine",
    "Q",
    "ScriptedSolver",
    "error_of",
    "metric",
    "serve",
    "settings_for",
    "solve",
    "transport",
    "url_of",
]

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
    return Settings(solver=solver, **extra)


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
    error: dict[str, Any] = body["error"]
    return error


async def metric(client: httpx.AsyncClient, name: str, **labels: str) -> float:
    text = (await client.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0
