"""The response cache on a real ``redis-server``, shared by two replicas.

100 held-out GSM8K questions at temperature 0 go through two app instances
(two replicas: nothing shared but Redis), then again, each question through
the other replica: the second pass is all hits, no solver call, 0 USD, the
same answers. A changed sampling parameter or solver model misses. The
solver is scripted in process (its answer depends on what it is asked) and
the decomposer is the fake one, so no model runs.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from contextlib import AsyncExitStack
from typing import Any

import httpx
import httpx2
import pytest

from service.distill import data
from service.distill.cli import DEFAULT_GOLD
from tests.fakes import FakeDecomposer, ScriptedSolver, metric, serve, settings_for

pytestmark = pytest.mark.slow

PLAN = "1. What is given?\n2. What is asked?"
PRICED = {"big-solver": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}


class EchoSolver(ScriptedSolver):
    """Answers with a number derived from the messages: a different question, a
    different answer; the same question, the same answer."""

    async def _behave(self, behaviour: str, request: httpx2.Request) -> httpx2.Response:
        messages = json.loads(request.content)["messages"]
        digest = hashlib.sha256(json.dumps(messages).encode()).hexdigest()
        return self._ok(f"The answer is {int(digest[:6], 16) % 1000}.")


def held_out(n: int) -> list[str]:
    gold = data.dedupe(data.load_gold(DEFAULT_GOLD))
    _, held = data.split(gold, 150, 0)
    return [ex.question for ex in held[:n]]


async def solve_all(
    clients: list[httpx.AsyncClient], questions: list[str], offset: int, key: str
) -> list[dict[str, Any]]:
    out = []
    for i, q in enumerate(questions):
        resp = await clients[(i + offset) % len(clients)].post(
            "/solve",
            json={"question": q, "mode": "static"},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert resp.status_code == 200, resp.text
        out.append(resp.json())
    return out


async def test_two_replicas_share_hits_through_redis(redis_url: str) -> None:
    questions = held_out(100)
    assert len(questions) == 100
    # A key of its own: the cache's namespace, apart from other tests' entries.
    key = f"sk-{uuid.uuid4().hex}"
    tenant = [{"name": f"cache-test-{key[3:11]}", "key": key}]

    def settings(**solver: Any) -> Any:
        return settings_for(
            redis_url=redis_url, prices=PRICED, api_keys=tenant, solver={"max_tokens": 8, **solver}
        )

    solver = EchoSolver()
    async with AsyncExitStack() as stack:
        replicas = [
            await stack.enter_async_context(serve(settings(), solver, FakeDecomposer(PLAN)))
            for _ in range(2)
        ]
        first = await solve_all(replicas, questions, 0, key)
        calls = solver.hits
        # Each question through the replica that did not answer it the first time.
        second = await solve_all(replicas, questions, 1, key)
        hits = [
            await metric(r, "divconq_cache_lookups_total", kind="solve", outcome="hit")
            for r in replicas
        ]
        changed = {
            "max_tokens": await stack.enter_async_context(
                serve(settings(max_tokens=9), solver, FakeDecomposer(PLAN))
            ),
            "model": await stack.enter_async_context(
                serve(settings(model="other-solver"), solver, FakeDecomposer(PLAN))
            ),
        }
        before = solver.hits
        variants = {
            name: await solve_all([client], questions[:10], 0, key)
            for name, client in changed.items()
        }
    assert calls == 100 * 3, "three solver calls per question the first time"
    assert sum(r["usage"]["total"]["cost_usd"] for r in first) > 0
    assert solver.hits - before == 2 * 10 * 3, "a changed parameter or model misses"
    assert all(r["cached"] for r in second) and sum(hits) == 100
    assert sum(r["usage"]["total"]["cost_usd"] for r in second) == 0.0
    assert sum(r["usage"]["solver"]["calls"] for r in second) == 0
    assert [r["answer_text"] for r in second] == [r["answer_text"] for r in first]
    assert [r["answer"] for r in second] == [r["answer"] for r in first]
    assert not any(r["cached"] for rows in variants.values() for r in rows)
    print(
        f"\ncache through two replicas on Redis: pass 1 {calls} solver calls, "
        f"pass 2 {sum(r['cached'] for r in second)}/100 hits, 0 solver calls, "
        f"{sum(r['usage']['total']['cost_usd'] for r in second)} USD"
    )
