"""The response cache in process: what hits, what misses, what a hit costs.

Fake decomposer, scripted solvers, the in-process LRU store (the Redis store
and two replicas sharing it are in the slow tier, tests/test_cache_redis.py).
"""

from __future__ import annotations

from typing import Any

import httpx

from service.cache import CachePolicy, MemoryStore, ResponseCache
from service.cache.stores import CacheUnavailable
from service.observability.metrics import Metrics
from tests.fakes import FakeDecomposer, Q, ScriptedSolver, metric, serve, settings_for, url_of

PLAN = "1. How many apples does Tom have at first?\n2. How many does he buy?"
PRICED = {"big-solver": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}


async def static(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    headers = body.pop("headers", None)
    resp = await client.post(
        "/solve", json={"question": Q, "mode": "static", **body}, headers=headers
    )
    assert resp.status_code == 200, resp.text
    return resp


async def test_a_repeat_is_a_hit_that_costs_nothing_and_answers_the_same() -> None:
    solver, decomposer = ScriptedSolver("ok"), FakeDecomposer(PLAN)
    async with serve(settings_for(prices=PRICED), solver, decomposer) as client:
        first = (await static(client)).json()
        calls = solver.hits
        second = (await static(client)).json()
        hits = await metric(client, "divconq_cache_lookups_total", kind="solve", outcome="hit")
        misses = await metric(client, "divconq_cache_lookups_total", kind="solve", outcome="miss")
    assert solver.hits == calls == 3 and len(decomposer.calls) == 1
    assert first["usage"]["total"]["cost_usd"] > 0 and not first["cached"]
    assert second["cached"] is True and second["id"] != first["id"]
    assert (second["answer"], second["answer_text"]) == (first["answer"], first["answer_text"])
    assert [s["answer"] for s in second["subquestions"]] == [
        s["answer"] for s in first["subquestions"]
    ]
    usage = second["usage"]
    assert usage["total"] == {"prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0}
    assert usage["solver"]["calls"] == 0 and usage["solver"]["cached_calls"] == 3
    assert usage["decomposer"]["calls"] == 0 and usage["decomposer"]["cached_calls"] == 1
    assert (hits, misses) == (1, 1)


async def test_a_streamed_repeat_hits_per_solver_call() -> None:
    solver = ScriptedSolver("ok")
    async with serve(settings_for(prices=PRICED), solver, FakeDecomposer(PLAN)) as client:
        await static(client)
        calls = solver.hits
        async with client.stream(
            "POST", "/solve", json={"question": Q, "mode": "static", "stream": True}
        ) as resp:
            text = "".join([chunk async for chunk in resp.aiter_text()])
        call_hits = await metric(client, "divconq_cache_lookups_total", kind="call", outcome="hit")
    assert solver.hits == calls, "every solver call came from the cache"
    assert '"cached_calls":3' in text and '"cost_usd":0.0' in text
    assert call_hits == 3


async def test_cache_false_and_no_cache_bypass_and_no_store_does_not_write() -> None:
    solver = ScriptedSolver("ok")
    async with serve(settings_for(), solver, FakeDecomposer(PLAN)) as client:
        # Not written: the next plain request misses.
        await static(client, cache=False)
        await static(client, headers={"Cache-Control": "no-store"})
        assert solver.hits == 6
        # Written now, but no-cache and cache=false do not read it.
        await static(client)
        bypassed = [
            (await static(client, headers={"Cache-Control": "no-cache"})).json(),
            (await static(client, cache=False)).json(),
        ]
        assert solver.hits == 15 and not any(b["cached"] for b in bypassed)
        assert (await static(client)).json()["cached"] is True
    assert solver.hits == 15


async def test_a_changed_sampling_parameter_or_solver_model_misses() -> None:
    same = {"base_url": url_of("solver"), "api_key": "k", "max_tokens": 8}
    settings = settings_for(
        solvers={
            "longer": {**same, "model": "big-solver", "max_tokens": 9},
            "other_model": {**same, "model": "other-solver"},
            # The same model, URL and sampling under another name: the same calls.
            "twin": {**same, "model": "big-solver"},
        }
    )
    solver = ScriptedSolver("ok")
    async with serve(settings, solver, FakeDecomposer(PLAN)) as client:
        answers = [
            await static(client, solver=name) for name in ("default", "longer", "other_model")
        ]
        assert solver.hits == 9 and not any(a.json()["cached"] for a in answers)
        # Each is cached under its own key.
        for name in ("default", "longer", "other_model"):
            assert (await static(client, solver=name)).json()["cached"] is True
        twin = (await static(client, solver="twin")).json()
    assert [b["max_tokens"] for b in solver.bodies[:9:3]] == [8, 9, 8]
    assert solver.bodies[6]["model"] == "other-solver"
    assert solver.hits == 9 and twin["usage"]["solver"]["cached_calls"] == 3


async def test_other_questions_caps_and_modes_miss() -> None:
    solver = ScriptedSolver("ok")
    async with serve(settings_for(), solver, FakeDecomposer(PLAN)) as client:
        await static(client)
        others = [
            await static(client, question=Q + " Answer in words."),
            await static(client, max_subquestions=1),
            await static(client, mode="hinted"),
            await static(client, context="Tom is a farmer."),
        ]
    assert not any(o.json()["cached"] for o in others)


async def test_above_temperature_0_only_cache_true_caches() -> None:
    solver = ScriptedSolver("ok")
    settings = settings_for(solver={"temperature": 0.7})
    async with serve(settings, solver, FakeDecomposer(PLAN)) as client:
        await static(client)
        assert not (await static(client)).json()["cached"]
        await static(client, cache=True)
        forced = (await static(client, cache=True)).json()
    assert forced["cached"] is True and solver.hits == 9


async def test_namespaces_do_not_share_entries_unless_shared() -> None:
    cache = ResponseCache(MemoryStore(10), 60.0, Metrics(), enabled=True)
    team_a, team_b = CachePolicy(namespace="team-a"), CachePolicy(namespace="team-b")
    await cache.put("solve", team_a, {"q": 1}, {"answer": "7"})
    assert await cache.get("solve", team_a, {"q": 1}) == {"answer": "7"}
    assert await cache.get("solve", team_b, {"q": 1}) is None
    assert await cache.get("solve", team_a, {"q": 2}) is None


async def test_the_memory_store_is_a_bounded_lru_with_expiry() -> None:
    now = [0.0]
    store = MemoryStore(2, clock=lambda: now[0])
    await store.set("a", b"1", 10.0)
    await store.set("b", b"2", 10.0)
    assert await store.get("a") == b"1"  # a is now the most recently used
    await store.set("c", b"3", 10.0)
    assert (await store.get("b"), await store.get("a"), len(store)) == (None, b"1", 2)
    now[0] = 10.0
    assert await store.get("a") is None and await store.get("c") is None


class _Down:
    kind = "down"

    async def get(self, key: str) -> bytes | None:
        raise CacheUnavailable("connection refused")

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        raise CacheUnavailable("connection refused")

    async def check(self) -> None:
        raise CacheUnavailable("connection refused")

    async def aclose(self) -> None:
        return None


async def test_a_store_outage_is_served_uncached_and_counted() -> None:
    metrics = Metrics()
    cache = ResponseCache(_Down(), 60.0, metrics, enabled=True)
    policy = CachePolicy()
    assert await cache.get("call", policy, {"m": 1}) is None
    await cache.put("call", policy, {"m": 1}, {"text": "x"})
    errors = metrics.cache_lookups.labels("call", "error")._value.get()
    assert errors == 2


TEAMS = [
    {"name": "team-a", "key": "sk-team-a-secret"},
    {"name": "team-b", "key": "sk-team-b-secret"},
]


def bearer(team: str) -> dict[str, str]:
    return {"Authorization": f"Bearer sk-{team}-secret"}


async def test_each_key_hits_only_its_own_entries_unless_the_cache_is_shared() -> None:
    for shared, expected_hits in ((False, 6), (True, 3)):
        solver = ScriptedSolver("ok")
        settings = settings_for(api_keys=TEAMS, cache={"shared": shared})
        async with serve(settings, solver, FakeDecomposer(PLAN)) as client:
            first = await static(client, headers=bearer("team-a"))
            other = await static(client, headers=bearer("team-b"))
            again = await static(client, headers=bearer("team-a"))
        assert solver.hits == expected_hits, shared
        assert not first.json()["cached"] and again.json()["cached"]
        assert other.json()["cached"] is shared
