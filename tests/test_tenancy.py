"""Keys as tenants: parsing, per-key limits at admission (in process), the secure default."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from service.cli.main import check_exposure
from service.core.settings import Settings
from service.tenancy.store import Decision, MemoryStore, Quota, StoreUnavailable
from tests.fakes import Q, ScriptedSolver, error_of, metric, serve, settings_for
from tests.support import refused_start

# 12:00:30 UTC: 30 s left in the minute, 43,170 s left in the day.
NOON = 1_767_268_830.0
OVERHEAD = 100


def tenant(**limits: Any) -> dict[str, Any]:
    return {"name": "team-a", "key": "sk-team-a-secret", **limits}


AUTH = {"Authorization": "Bearer sk-team-a-secret"}


def keyed(**limits: Any) -> Settings:
    return settings_for(
        api_keys=[tenant(**limits)],
        limits={"prompt_overhead_tokens": OVERHEAD},
        prices={"big-solver": {"input_per_mtok": 1_000_000.0, "output_per_mtok": 1_000_000.0}},
    )


def direct_reservation() -> int:
    """docs/tenancy.md's bound for one direct call: question bytes + template + max_tokens."""
    return len(Q.encode()) + OVERHEAD + 8  # settings_for's solver max_tokens


async def post(client: Any, **body: Any) -> Any:
    # Uncached: each request runs, spends and settles (a cache hit costs nothing).
    return await client.post(
        "/solve", json={"question": Q, "mode": "direct", "cache": False, **body}, headers=AUTH
    )


# --- parsing ---------------------------------------------------------------------------


def test_plain_strings_are_unlimited_keys_named_by_position() -> None:
    s = Settings(api_keys=["first-secret", tenant(requests_per_minute=5), "third-secret"])
    assert [k.name for k in s.api_keys] == ["key-1", "team-a", "key-3"]
    assert not s.api_keys[0].limited and s.api_keys[1].limited
    assert s.api_keys[1].requests_per_minute == 5
    assert "first-secret" not in repr(s.api_keys)


@pytest.mark.parametrize(
    ("entry", "named"),
    [
        ({"name": "team a", "key": "k"}, "name"),
        ({"name": "t", "key": "k", "requests_per_minute": 0}, "requests_per_minute"),
        ({"name": "t", "key": "k", "usd_per_day": -1}, "usd_per_day"),
        ({"name": "t", "key": "k", "rpm": 5}, "rpm"),
        ({"key": "k"}, "name"),
    ],
)
def test_a_malformed_key_object_is_a_start_up_error_naming_the_setting(
    entry: dict[str, Any], named: str
) -> None:
    line = refused_start({"DIVCONQ_API_KEYS": json.dumps([entry])})
    assert line.startswith(f"divconq: invalid settings: DIVCONQ_API_KEYS[0].{named}")


def test_an_unreachable_redis_at_start_up_is_one_line_naming_the_setting(
    tmp_path: Any,
) -> None:
    missing = tmp_path / "no-redis.sock"
    env = {
        "DIVCONQ_API_KEYS": json.dumps([tenant(requests_per_minute=5)]),
        "DIVCONQ_REDIS_URL": f"unix://{missing}",
    }
    line = refused_start(env)
    assert line.startswith("divconq: DIVCONQ_REDIS_URL: cannot reach Redis at "), line
    assert str(missing) in line


def test_duplicate_names_and_secrets_are_refused() -> None:
    with pytest.raises(ValueError, match="'team-a' is used twice"):
        Settings(api_keys=[tenant(), {"name": "team-a", "key": "other"}])
    with pytest.raises(ValueError, match="two entries share one key"):
        Settings(api_keys=[tenant(), {"name": "team-b", "key": "sk-team-a-secret"}])


# --- the secure default ---------------------------------------------------------------


def test_no_keys_on_a_public_address_refuses_to_start_with_one_line() -> None:
    # The fast tier's environment has no DIVCONQ_API_KEYS (tests/conftest.py).
    line = refused_start({"DIVCONQ_HOST": "0.0.0.0"})
    assert "refusing to serve on 0.0.0.0:8000 without API keys" in line
    assert "DIVCONQ_API_KEYS" in line and "DIVCONQ_ALLOW_UNAUTHENTICATED=true" in line


def test_loopback_keys_or_the_opt_out_may_start(caplog: pytest.LogCaptureFixture) -> None:
    for host in ("127.0.0.1", "localhost", "::1"):
        check_exposure(Settings(host=host))
    check_exposure(Settings(host="0.0.0.0", api_keys=["a-key"]))
    with pytest.raises(SystemExit):
        check_exposure(Settings(host="::"))
    with caplog.at_level(logging.WARNING):
        check_exposure(Settings(host="0.0.0.0", allow_unauthenticated=True))
    assert "serving without API keys" in caplog.text


# --- requests per minute ----------------------------------------------------------------


async def test_requests_per_minute_admit_exactly_the_limit_then_429() -> None:
    store = MemoryStore(clock=lambda: NOON)
    async with serve(keyed(requests_per_minute=3), ScriptedSolver("ok"), limit_store=store) as c:
        answers = await asyncio.gather(*(post(c) for _ in range(5)))
        rejected = await metric(
            c, "divconq_limit_rejections_total", key="team-a", limit="requests_per_minute"
        )
        by_key = await metric(
            c, "divconq_key_requests_total", key="team-a", endpoint="solve", status="429"
        )
        exposition = (await c.get("/metrics")).text
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200, 200, 200, 429, 429]
    for resp in answers:
        if resp.status_code == 429:
            err = error_of(resp, 429, "rate_limit_exceeded")
            assert "team-a" in err["message"] and "3 requests per minute" in err["message"]
            assert resp.headers["retry-after"] == "30"  # seconds to the minute's end
            assert "sk-team-a-secret" not in resp.text
    assert rejected == 2 and by_key == 2
    assert "sk-team-a-secret" not in exposition


async def test_a_new_minute_admits_again() -> None:
    now = [NOON]
    store = MemoryStore(clock=lambda: now[0])
    async with serve(keyed(requests_per_minute=1), ScriptedSolver("ok"), limit_store=store) as c:
        first, second = await post(c), await post(c)
        now[0] += 30  # 12:01:00
        third = await post(c)
    assert [first.status_code, second.status_code, third.status_code] == [200, 429, 200]


async def test_unlimited_and_other_keys_are_not_counted() -> None:
    settings = settings_for(
        api_keys=[tenant(requests_per_minute=1), {"name": "team-b", "key": "sk-team-b-secret"}]
    )
    store = MemoryStore(clock=lambda: NOON)
    async with serve(settings, ScriptedSolver("ok"), limit_store=store) as c:
        a = [await post(c) for _ in range(2)]
        b = [
            await c.post(
                "/solve",
                json={"question": Q, "mode": "direct"},
                headers={"Authorization": "Bearer sk-team-b-secret"},
            )
            for _ in range(3)
        ]
    assert [r.status_code for r in a] == [200, 429]
    assert [r.status_code for r in b] == [200, 200, 200]


async def test_limits_apply_to_decompose_and_the_facade() -> None:
    store = MemoryStore(clock=lambda: NOON)
    async with serve(keyed(requests_per_minute=2), ScriptedSolver("ok"), limit_store=store) as c:
        dec = await c.post("/decompose", json={"question": Q}, headers=AUTH)
        chat = await c.post(
            "/v1/chat/completions",
            json={"model": "divconq-direct", "messages": [{"role": "user", "content": Q}]},
            headers=AUTH,
        )
        over = await c.post(
            "/v1/chat/completions",
            json={"model": "divconq-direct", "messages": [{"role": "user", "content": Q}]},
            headers=AUTH,
        )
    assert dec.status_code == 200 and chat.status_code == 200, (dec.text, chat.text)
    error_of(over, 429, "rate_limit_exceeded")


# --- tokens per minute: reserve, then settle --------------------------------------------


async def test_tokens_reserve_the_worst_case_and_settle_to_the_real_count() -> None:
    reserve = direct_reservation()
    spent = ScriptedSolver.PROMPT_TOKENS + 5  # what the scripted solver reports
    store = MemoryStore(clock=lambda: NOON)
    # Exactly one reservation fits: the first is admitted; settled to its real
    # count, it leaves less than a reservation.
    settings = keyed(tokens_per_minute=reserve)
    async with serve(settings, ScriptedSolver("ok"), limit_store=store) as c:
        first, second = await post(c), await post(c)
    assert first.status_code == 200, first.text
    err = error_of(second, 429, "token_limit_exceeded")
    assert f"{reserve} tokens per minute" in err["message"]
    assert second.headers["retry-after"] == "30"
    # One real count more than that, and the second fits too.
    store = MemoryStore(clock=lambda: NOON)
    async with serve(
        keyed(tokens_per_minute=reserve + spent), ScriptedSolver("ok"), limit_store=store
    ) as c:
        answers = [await post(c) for _ in range(3)]
    assert [r.status_code for r in answers] == [200, 200, 429]


async def test_a_request_bigger_than_the_token_limit_is_422_not_a_retry() -> None:
    store = MemoryStore(clock=lambda: NOON)
    limit = direct_reservation() - 1
    async with serve(keyed(tokens_per_minute=limit), ScriptedSolver("ok"), limit_store=store) as c:
        resp = await post(c)
    err = error_of(resp, 422, "invalid_request")
    assert f"({limit})" in err["message"]


async def test_concurrent_requests_never_reserve_past_the_limit() -> None:
    reserve = direct_reservation()
    solver = ScriptedSolver("block")
    store = MemoryStore(clock=lambda: NOON)
    async with serve(keyed(tokens_per_minute=3 * reserve + 1), solver, limit_store=store) as c:
        held = [asyncio.create_task(post(c)) for _ in range(3)]
        await solver.until_hits(3)
        over = await post(c)  # three in flight hold three reservations
        solver.release.set()
        done = await asyncio.gather(*held)
    error_of(over, 429, "token_limit_exceeded")
    assert [r.status_code for r in done] == [200, 200, 200]


# --- USD per day ---------------------------------------------------------------------


async def test_budget_stops_the_key_once_spent_until_the_day_rolls_over() -> None:
    # At 1 USD per token, one direct request costs 16 USD.
    now = [NOON]
    store = MemoryStore(clock=lambda: now[0])
    async with serve(keyed(usd_per_day=32.0), ScriptedSolver("ok"), limit_store=store) as c:
        answers = [await post(c) for _ in range(3)]
        spent = await metric(c, "divconq_key_cost_usd_total", key="team-a")
        now[0] += 43_170  # midnight UTC
        tomorrow = await post(c)
    assert [r.status_code for r in answers] == [200, 200, 429]
    assert answers[0].json()["usage"]["total"]["cost_usd"] == 16.0
    err = error_of(answers[2], 429, "budget_exceeded")
    assert "32 USD per day" in err["message"]
    assert answers[2].headers["retry-after"] == "43170"  # seconds to midnight UTC
    assert spent == 32.0
    assert tomorrow.status_code == 200


async def test_a_failed_request_is_charged_what_it_really_spent() -> None:
    """Socratic: the decomposer's call is spent even when the solver then fails."""
    store = MemoryStore(clock=lambda: NOON)
    settings = settings_for(
        api_keys=[tenant(usd_per_day=1000.0)], prices={"fake-decomposer": {"input_per_mtok": 1e6}}
    )
    async with serve(settings, ScriptedSolver("echo401"), limit_store=store) as c:
        resp = await post(c, mode="socratic")
        spent = await metric(c, "divconq_key_cost_usd_total", key="team-a")
        tokens = await metric(c, "divconq_key_tokens_total", key="team-a")
    assert resp.status_code == 502
    assert spent == 50.0 and tokens == 70.0  # FakeDecomposer: 50 prompt, 20 completion


# --- an unreachable store ---------------------------------------------------------------


class DownStore:
    kind = "redis"

    async def admit(self, name: str, quota: Quota, reserve_tokens: int) -> Decision:
        raise StoreUnavailable("ConnectionError")

    async def settle(self, *args: Any) -> None:
        raise StoreUnavailable("ConnectionError")

    async def ping(self) -> None:
        raise StoreUnavailable("ConnectionError")

    async def aclose(self) -> None:
        return None


@pytest.mark.parametrize(("policy", "status"), [("allow", 200), ("deny", 503)])
async def test_an_unreachable_store_follows_the_policy_never_500(policy: str, status: int) -> None:
    settings = keyed(requests_per_minute=5).model_copy(
        update={"limits": Settings().limits.model_copy(update={"on_store_error": policy})}
    )
    async with serve(settings, ScriptedSolver("ok"), limit_store=DownStore()) as c:
        resp = await post(c)
        ready = await c.get("/readyz")
        errors = await metric(c, "divconq_limit_store_errors_total", op="admit", policy=policy)
    assert resp.status_code == status, resp.text
    if status == 503:
        error_of(resp, 503, "limits_unavailable")
    assert errors == 1
    assert ready.status_code == 200
    assert ready.json()["limits"] == {
        "enabled": True,
        "store": "redis",
        "store_reachable": False,
        "on_store_error": policy,
    }


async def test_limits_can_be_switched_off() -> None:
    settings = keyed(requests_per_minute=1).model_copy(
        update={"limits": Settings().limits.model_copy(update={"enabled": False})}
    )
    async with serve(settings, ScriptedSolver("ok"), limit_store=DownStore()) as c:
        answers = [await post(c) for _ in range(3)]
    assert [r.status_code for r in answers] == [200, 200, 200]


# --- who the request is ----------------------------------------------------------------


async def test_the_key_name_never_its_secret_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="divconq.access"):
        async with serve(keyed(), ScriptedSolver("ok")) as c:
            resp = await post(c)
    assert resp.status_code == 200
    [line] = [r for r in caplog.records if r.name == "divconq.access"]
    assert line.__dict__["key"] == "team-a"
    assert "sk-team-a-secret" not in caplog.text


async def test_the_cache_namespace_is_the_key_name() -> None:
    """Another tenant's identical question misses; the same tenant's hits (and is free)."""
    settings = settings_for(api_keys=[tenant(), {"name": "team-b", "key": "sk-team-b-secret"}])
    solver = ScriptedSolver("ok")
    async with serve(settings, solver) as c:

        async def ask(secret: str) -> Any:
            return await c.post(
                "/solve",
                json={"question": Q, "mode": "direct"},
                headers={"Authorization": f"Bearer {secret}"},
            )

        a1, b1, a2 = (
            await ask("sk-team-a-secret"),
            await ask("sk-team-b-secret"),
            await ask("sk-team-a-secret"),
        )
    assert [r.json()["cached"] for r in (a1, b1, a2)] == [False, False, True]
    assert solver.hits == 2
