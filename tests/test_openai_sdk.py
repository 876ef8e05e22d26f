"""The official openai SDK, unchanged, against the live service (real engine, ``vllm
serve`` as the solver): sync, async and streaming, and a disconnect storm across
/solve, streamed /solve and the facade."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import psutil
from prometheus_client.parser import text_string_to_metric_families

from tests.stacks import Stack

QUESTION = "A pen costs $3. How much do 4 pens cost?"
STORM_QUESTION = (
    "Ben earns $15 an hour. He works 6 hours on Monday and 4 hours on Tuesday. "
    "How much does he earn in total?"
)
MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "system", "content": "Answer with the number."},
    {"role": "user", "content": QUESTION},
]


def test_sdk_sync_async_and_streaming(service_url: str) -> None:
    base_url = f"{service_url}/v1"
    client = openai.OpenAI(base_url=base_url, api_key="unused")
    ids = [m.id for m in client.models.list()]
    assert {"divconq-static", "divconq-direct", "gemma-3-270m"} <= set(ids)
    extra = {"max_subquestions": 2}
    whole = client.chat.completions.create(
        model="divconq-static", messages=MESSAGES, extra_body=extra
    )
    assert whole.object == "chat.completion" and whole.choices[0].message.content
    detail = (whole.model_extra or {})["divconq"]
    assert whole.usage is not None
    assert whole.usage.prompt_tokens == detail["usage"]["total"]["prompt_tokens"] > 0
    assert detail["usage"]["decomposer"]["calls"] == 1

    async def run_async() -> tuple[str, list[str], openai.types.CompletionUsage | None]:
        async with openai.AsyncOpenAI(base_url=base_url, api_key="unused") as aclient:
            plain = await aclient.chat.completions.create(model="divconq-direct", messages=MESSAGES)
            # Past the response cache: the plain request just made the same call,
            # and a cached call spends (and reports) no tokens.
            stream = await aclient.chat.completions.create(
                model="divconq-direct",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
                extra_headers={"Cache-Control": "no-cache"},
            )
            chunks = [c async for c in stream]
        text = [c.choices[0].delta.content or "" for c in chunks if c.choices]
        return plain.choices[0].message.content or "", text, chunks[-1].usage

    plain, streamed, usage = asyncio.run(run_async())
    # Greedy decoding: the streamed answer is the non-streamed one.
    assert "".join(streamed) == plain and plain
    assert usage is not None and usage.total_tokens > 0


def _samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{url}/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def _by_status(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for (name, labels), value in samples.items():
        if name == "divconq_requests_total":
            status = dict(labels)["status"]
            out[status] = out.get(status, 0.0) + value
    return out


def _solver_connections(stack: Stack) -> int:
    port = int(stack.solver.url.rsplit(":", 1)[1].split("/")[0])
    proc = psutil.Process(stack.service.proc.pid)
    return sum(
        1
        for c in proc.net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    )


def test_disconnect_storm(service_url: str, stack: Stack) -> None:
    """50 clients leave mid-request: a 499 for each that left, no 5xx, the engine idle again, and no
    solver connection left behind."""
    # vllm serve closes keep-alive connections idle for 5 s: after a quiet spell only
    # connections with a call on them are left open.
    time.sleep(6)
    before = _by_status(_samples(service_url))
    connections_before = _solver_connections(stack)
    # A two-step problem: a one-step one (QUESTION) the distilled decomposer
    # answers with "none", and 50 of those can finish inside the clients'
    # patience on a fast CPU.
    # Socratic: rounds of question generator and solver one after another, so
    # each request stays busy for many engine steps even on a fast CPU.
    body = {"question": STORM_QUESTION, "mode": "socratic", "max_subquestions": 4}
    chat = {
        "model": "divconq-socratic",
        "messages": [{"role": "user", "content": STORM_QUESTION}],
        "max_subquestions": 4,
    }

    async def leave(k: int) -> bool:
        """Whether the client left before its answer came (False: it was answered)."""
        async with httpx.AsyncClient(base_url=service_url, timeout=None) as client:
            kind = k % 4
            if kind in (0, 1):  # a plain request, given up after a while
                url, payload = ("/solve", body) if kind == 0 else ("/v1/chat/completions", chat)
                # Late enough that the service has read the request (on a loaded
                # 2-core box, seconds for 50 at once), long before 50 static
                # requests can finish on CPU.
                try:
                    resp = await asyncio.wait_for(client.post(url, json=payload), 6.0 + k % 5 * 0.5)
                except TimeoutError:
                    return True
                # A fast CPU may answer one before its client gives up: then it
                # must be a plain success, and it is not a disconnect.
                assert resp.status_code == 200, resp.text
                return False
            url, payload = (
                ("/solve", {**body, "stream": True})
                if kind == 2
                else ("/v1/chat/completions", {**chat, "stream": True})
            )
            async with client.stream("POST", url, json=payload) as stream:
                async for _ in stream.aiter_lines():
                    break  # the first event, then gone
            return True

    async def storm() -> int:
        return sum(await asyncio.gather(*(leave(k) for k in range(50))))

    left = asyncio.run(storm())
    # Streams leave after their first event, always: at least half the storm.
    assert left >= 25

    def settled() -> bool:
        ready = httpx.get(f"{service_url}/readyz").json()
        return bool(ready["in_flight"] == 0 and ready["decomposer"]["engine_requests"] == 0)

    deadline = time.monotonic() + 60
    while not settled() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert settled(), httpx.get(f"{service_url}/readyz").json()
    after = _by_status(_samples(service_url))
    delta = {s: after.get(s, 0.0) - before.get(s, 0.0) for s in after}
    assert delta.get("499") == left, (left, delta)
    assert not {s: n for s, n in delta.items() if s.startswith("5") and n}, delta
    time.sleep(6)
    connections_after = _solver_connections(stack)
    print(f"storm: {delta}; solver connections {connections_before} -> {connections_after}")
    assert connections_after <= connections_before
