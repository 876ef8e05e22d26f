"""Per-key limits on a real ``redis-server``: the Lua scripts' atomic steps."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from service.cli import procs
from service.tenancy.redis_store import RedisStore, check_reachable, connect
from service.tenancy.store import Quota
from tests.fakes import Q, ScriptedSolver, error_of, metric, serve, settings_for
from tests.real_services import redis_server

pytestmark = pytest.mark.slow

AUTH = {"Authorization": "Bearer sk-team-a-secret"}
BODY = {"question": Q, "mode": "direct", "cache": False}


async def early_in_a_minute() -> None:
    """Windows are UTC minutes: start a burst well inside one (Redis runs on this clock)."""
    left = 60 - time.time() % 60
    if left < 10:
        await asyncio.sleep(left + 0.1)


def _store(url: str) -> RedisStore:
    # A prefix of its own: the session's Redis is shared with other tests.
    return RedisStore(connect(url, 2.0), f"test:{uuid.uuid4().hex}")


async def test_concurrent_admissions_take_exactly_the_limit(redis_url: str) -> None:
    store = _store(redis_url)
    try:
        quota = Quota(requests_per_minute=60)
        # Several clients, as several replicas would be.
        others = [RedisStore(connect(redis_url, 2.0), store._prefix) for _ in range(3)]
        stores = [store, *others]
        await early_in_a_minute()
        decisions = await asyncio.gather(
            *(stores[i % 4].admit("team-a", quota, 0) for i in range(150))
        )
        admitted = [d for d in decisions if d.admitted]
        refused = [d for d in decisions if not d.admitted]
        assert len({d.minute for d in decisions}) == 1
        assert len(admitted) == 60 and len(refused) == 90
        assert all(d.limit == "requests_per_minute" for d in refused)
        assert all(1 <= d.retry_after_s <= 60 for d in refused)
        for other in others:
            await other.aclose()
    finally:
        await store.aclose()


async def test_tokens_reserve_then_settle_and_budget_in_redis(redis_url: str) -> None:
    store = _store(redis_url)
    try:
        quota = Quota(tokens_per_minute=1000, usd_per_day=1.0)
        await early_in_a_minute()
        first = await store.admit("team-a", quota, 600)
        second = await store.admit("team-a", quota, 600)
        assert first.admitted and not second.admitted
        assert second.limit == "tokens_per_minute"
        # Settled to 100 real tokens (and 0.6 USD): 600 more fit now.
        await store.settle("team-a", quota, first, 100 - 600, 0.6)
        third = await store.admit("team-a", quota, 600)
        assert third.admitted
        await store.settle("team-a", quota, third, 0, 0.5)
        # 1.1 USD spent of 1.0: the next is refused until midnight UTC.
        over = await store.admit("team-a", quota, 1)
        assert not over.admitted and over.limit == "usd_per_day"
        assert 1 <= over.retry_after_s <= 86400
    finally:
        await store.aclose()


def test_an_unreachable_redis_is_one_line_naming_where(redis_url: str) -> None:
    assert check_reachable(redis_url, 2.0) is None
    problem = check_reachable("redis://:hunter2@127.0.0.1:1/0", 0.5)
    assert problem is not None and "127.0.0.1:1" in problem and "hunter2" not in problem


@pytest.mark.parametrize(("policy", "status"), [("allow", 200), ("deny", 503)])
async def test_a_redis_that_goes_away_follows_the_policy_never_500(
    policy: str, status: int
) -> None:
    """The real client's real errors (a refused socket) become the policy, not a 500."""
    with redis_server() as (url, proc):
        settings = settings_for(
            api_keys=[{"name": "team-a", "key": "sk-team-a-secret", "requests_per_minute": 5}],
            redis_url=url,
            limits={"on_store_error": policy, "key_prefix": f"test:{uuid.uuid4().hex}"},
        )
        async with serve(settings, ScriptedSolver("ok")) as client:
            before = await client.post("/solve", json=BODY, headers=AUTH)
            procs.stop(proc)
            after = await client.post("/solve", json=BODY, headers=AUTH)
            ready = await client.get("/readyz")
            errors = await metric(
                client, "divconq_limit_store_errors_total", op="admit", policy=policy
            )
    assert before.status_code == 200, before.text
    assert after.status_code == status, after.text
    if status == 503:
        error_of(after, 503, "limits_unavailable")
    assert errors == 1
    assert ready.status_code == 200
    assert ready.json()["limits"]["store_reachable"] is False
