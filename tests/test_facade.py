"""The OpenAI-compatible pipeline facade in process, driven by the official openai SDK
(async; ``tests/test_openai_sdk.py`` runs sync, async and streaming against the live
service), and the validation of the embedded model's own /v1."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import openai
import pytest

from service.api.app import create_app
from service.core.settings import Settings
from tests.fakes import (
    KEY,
    FakeDecomposer,
    Q,
    ScriptedSolver,
    error_of,
    metric,
    serve,
    settings_for,
    transport,
)
from tests.streams import PLAN, without_latency

SYSTEM = "Apples come in bags of 3."
PIPELINE_MODELS = ["divconq-static", "divconq-hinted", "divconq-socratic", "divconq-direct"]


@contextlib.asynccontextmanager
async def sdk(
    settings: Settings,
    solver: ScriptedSolver,
    decomposer: FakeDecomposer | None = None,
    api_key: str = "unused",
) -> AsyncIterator[openai.AsyncOpenAI]:
    """An ``AsyncOpenAI`` client whose HTTP goes to the app in process."""
    app = create_app(
        settings, transport=transport({"solver": solver}), decomposer=decomposer or FakeDecomposer()
    )
    async with (
        app.router.lifespan_context(app),
        httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app)) as http,
    ):
        yield openai.AsyncOpenAI(
            base_url="http://divconq.test/v1", api_key=api_key, http_client=http, max_retries=0
        )


MESSAGES: list[Any] = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": Q},
]


async def test_chat_completion_is_solve_in_openai_shape() -> None:
    async with serve(settings_for(), ScriptedSolver("ok"), FakeDecomposer(PLAN)) as client:
        solved = (await client.post("/solve", json={"question": Q, "context": SYSTEM})).json()
    decomposer = FakeDecomposer(PLAN)
    async with sdk(settings_for(), ScriptedSolver("ok"), decomposer) as client:
        resp = await client.chat.completions.create(model="divconq-static", messages=MESSAGES)
    assert resp.object == "chat.completion" and resp.model == "divconq-static"
    assert resp.choices[0].message.content == solved["answer_text"]
    assert resp.choices[0].finish_reason == "stop"
    total = solved["usage"]["total"]
    assert resp.usage is not None
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (
        total["prompt_tokens"],
        total["completion_tokens"],
    )
    assert resp.usage.total_tokens == total["prompt_tokens"] + total["completion_tokens"]
    detail = (resp.model_extra or {})["divconq"]
    assert detail["mode"] == "static" and detail["answer"] == solved["answer"]
    assert without_latency(detail["subquestions"]) == without_latency(solved["subquestions"])
    assert without_latency(detail["usage"]) == without_latency(solved["usage"])
    assert SYSTEM in decomposer.calls[0]["prompt"]  # system text is the context


async def test_streamed_chat_completion_chunks_the_answer_with_usage_last() -> None:
    # The cache off: the streamed request's usage is compared with a fresh run's.
    settings = settings_for(cache={"enabled": False})
    async with sdk(settings, ScriptedSolver("ok"), FakeDecomposer(PLAN)) as client:
        whole = await client.chat.completions.create(model="divconq-static", messages=MESSAGES)
        stream = await client.chat.completions.create(
            model="divconq-static",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [c async for c in stream]
        plain = [
            c
            async for c in await client.chat.completions.create(
                model="divconq-direct", messages=MESSAGES, stream=True
            )
        ]
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    last = chunks[-1]
    assert last.choices == [] and last.usage == whole.usage
    assert all(c.usage is None for c in chunks[:-1])
    assert without_latency((last.model_extra or {})["divconq"]["usage"]) == without_latency(
        (whole.model_extra or {})["divconq"]["usage"]
    )
    # Without include_usage: no usage chunk; the detail rides on the finishing chunk.
    assert plain[-1].choices[0].finish_reason == "stop" and plain[-1].usage is None
    assert (plain[-1].model_extra or {})["divconq"]["mode"] == "direct"


async def test_models_lists_pipeline_models_and_the_embedded_one() -> None:
    async with sdk(settings_for(), ScriptedSolver("ok")) as client:
        ids = [m.id async for m in client.models.list()]
    assert ids == [*PIPELINE_MODELS, "gemma-3-270m"]


async def test_pipeline_models_can_be_renamed() -> None:
    settings = settings_for(pipeline_models={"gpt-4o-mini": "direct"})
    async with sdk(settings, ScriptedSolver("answer:It is 7.")) as client:
        resp = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        with pytest.raises(openai.NotFoundError, match="does not exist"):
            await client.chat.completions.create(model="divconq-static", messages=MESSAGES)
    assert resp.choices[0].message.content == "It is 7."


async def test_facade_errors_are_openai_sdk_errors() -> None:
    solver = ScriptedSolver("400")
    async with sdk(settings_for(), solver) as client:
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(model="nope", messages=MESSAGES)
        with pytest.raises(openai.UnprocessableEntityError, match="user message"):
            await client.chat.completions.create(
                model="divconq-static", messages=[{"role": "system", "content": "x"}]
            )
        with pytest.raises(openai.UnprocessableEntityError, match="max_subquestions"):
            await client.chat.completions.create(
                model="divconq-static", messages=MESSAGES, extra_body={"max_subquestions": 99}
            )
        # The solver refused the input: the client's 422, not a 5xx.
        with pytest.raises(openai.UnprocessableEntityError, match="HTTP 400"):
            await client.chat.completions.create(model="divconq-direct", messages=MESSAGES)
        stream = await client.chat.completions.create(
            model="divconq-direct", messages=MESSAGES, stream=True
        )
        with pytest.raises(openai.APIError, match="HTTP 400"):
            [c async for c in stream]


async def test_facade_behaves_as_solve_auth_admission_metrics() -> None:
    settings = settings_for(api_keys=["client-key"], max_in_flight=1)
    solver = ScriptedSolver("block", "ok")
    async with (
        sdk(settings, solver, api_key="wrong") as wrong,
        serve(settings, solver) as client,
    ):
        with pytest.raises(openai.AuthenticationError):
            await wrong.chat.completions.create(model="divconq-direct", messages=MESSAGES)
        auth = {"Authorization": "Bearer client-key"}
        chat = {"model": "divconq-direct", "messages": MESSAGES}
        import asyncio

        held = asyncio.create_task(client.post("/v1/chat/completions", json=chat, headers=auth))
        await solver.until_hits(1)
        refused = await client.post("/v1/chat/completions", json=chat, headers=auth)
        refused_solve = await client.post("/solve", json={"question": Q}, headers=auth)
        solver.release.set()
        done = await held
        # The embedded solver's own calls on /v1 are neither admitted nor counted.
        raw = await client.post("/v1/chat/completions", json={"messages": MESSAGES}, headers=auth)
        bad = await client.post(
            "/v1/chat/completions", json={**chat, "temperature": 9}, headers=auth
        )
        counts = {
            status: await metric(
                client, "divconq_requests_total", endpoint="chat_completions", status=status
            )
            for status in ("200", "422", "429")
        }
        direct = await metric(
            client, "divconq_requests_total", endpoint="chat_completions", mode="direct"
        )
    assert done.status_code == 200, done.text
    error_of(refused, 429, "overloaded")
    error_of(refused_solve, 429, "overloaded")
    error_of(raw, 503, "not_ready")  # not admitted or counted: the fake has no engine
    error_of(bad, 422, "invalid_request")
    assert counts == {"200": 1, "422": 1, "429": 1} and direct == 1
    assert KEY not in done.text


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        ({"stop": [""]}, "stop"),
        ({"stop": ""}, "stop"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"temperature": 5.1e141}, "temperature"),
        ({"temperature": -1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"n": 2}, "n"),
        ({"presence_penalty": 3}, "presence_penalty"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 10**9}, "max_tokens: must be at most 2048"),
        ({"max_completion_tokens": 4096}, "at most 2048"),
        ({"seed": 2**64}, "seed"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "role"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages"),
    ],
)
async def test_embedded_sampling_fields_are_validated(payload: dict[str, Any], needle: str) -> None:
    body = {"model": "gemma-3-270m", "messages": [{"role": "user", "content": "Hi"}], **payload}
    async with serve(Settings(), {}) as client:
        resp = await client.post("/v1/chat/completions", json=body)
    assert needle in error_of(resp, 422, "invalid_request")["message"]
