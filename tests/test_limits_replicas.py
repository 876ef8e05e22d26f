"""Per-key limits across replicas: two service processes sharing one real Redis.

Both replicas are real ``python -m service serve`` processes on sockets handed
over by the test; the solver is a scripted HTTP server and the decomposer is
never called (``direct`` mode), so no engine starts. The key's limits hold for
the pair exactly as for one process: the counters live in Redis and each
admission is one atomic script.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.cli.procs import url_of
from tests.fakes import Q
from tests.support import FaultServer, Proc, serve_process, start_process, wait_ready

pytestmark = pytest.mark.slow

OVERHEAD = 100
MAX_TOKENS = 8
# What the scripted solver reports for one call (FaultServer's usage).
SPENT = FaultServer.PROMPT_TOKENS + 5
RESERVED = len(Q.encode()) + OVERHEAD + MAX_TOKENS  # docs/tenancy.md, one direct call
TPM = 3 * RESERVED + 50
# 1,000 USD per million tokens: one request (16 tokens) costs 0.016 USD.
PRICE = {"big-solver": {"input_per_mtok": 1000.0, "output_per_mtok": 1000.0}}
COST = SPENT * 1000.0 / 1e6
BUDGET = 0.1

KEYS = [
    {"name": "team-rpm", "key": "sk-team-rpm-secret", "requests_per_minute": 60},
    {"name": "team-tpm", "key": "sk-team-tpm-secret", "tokens_per_minute": TPM},
    {"name": "team-usd", "key": "sk-team-usd-secret", "usd_per_day": BUDGET},
]


def _env(redis_url: str, solver_url: str, tmp: Path) -> dict[str, str]:
    return {
        "DIVCONQ_DECOMPOSER__BACKEND": "openai",
        "DIVCONQ_DECOMPOSER__BASE_URL": solver_url,
        "DIVCONQ_DECOMPOSER__MODEL": "never-called",
        "DIVCONQ_SOLVER__BASE_URL": solver_url,
        "DIVCONQ_SOLVER__MODEL": "big-solver",
        "DIVCONQ_SOLVER__MAX_TOKENS": str(MAX_TOKENS),
        "DIVCONQ_API_KEYS": json.dumps(KEYS),
        "DIVCONQ_REDIS_URL": redis_url,
        # A prefix of this run's own: the session's Redis is shared.
        "DIVCONQ_LIMITS__KEY_PREFIX": f"test:{uuid.uuid4().hex}",
        "DIVCONQ_LIMITS__PROMPT_OVERHEAD_TOKENS": str(OVERHEAD),
        "DIVCONQ_CACHE__ENABLED": "false",
        "DIVCONQ_DATA_DIR": str(tmp),
        "DIVCONQ_MAX_IN_FLIGHT": "256",
        "DIVCONQ_PRICES": json.dumps(PRICE),
    }


@pytest.fixture(scope="module")
def replicas(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[list[Proc], FaultServer]]:
    tmp = tmp_path_factory.mktemp("replicas")
    with FaultServer("slow", stall_s=0.2) as solver:
        env = _env(redis_url, solver.url, tmp)
        procs = [serve_process(env, tmp / f"replica-{i}.log") for i in range(2)]
        try:
            for i, proc in enumerate(procs):
                wait_ready(proc, f"replica {i}", timeout_s=120)
            yield procs, solver
        finally:
            for proc in procs:
                proc.stop()


def _early_in_a_minute(needed_s: float = 30.0) -> None:
    """Windows are UTC minutes (Redis's clock, this machine's): start a burst inside one."""
    left = 60 - time.time() % 60
    if left < needed_s:
        time.sleep(left + 0.2)


async def _burst(urls: list[str], secret: str, n: int, concurrency: int) -> list[httpx.Response]:
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def one(i: int) -> httpx.Response:
            async with gate:
                return await client.post(
                    f"{urls[i % len(urls)]}/solve",
                    json={"question": Q, "mode": "direct", "cache": False},
                    headers={"Authorization": f"Bearer {secret}"},
                )

        return await asyncio.gather(*(one(i) for i in range(n)))


def _limited(resp: httpx.Response, error_type: str) -> None:
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.json()["error"]["type"] == error_type
    assert 1 <= int(resp.headers["retry-after"]) <= 60
    assert "secret" not in resp.text


async def test_requests_per_minute_are_exact_across_two_replicas(
    replicas: tuple[list[Proc], FaultServer],
) -> None:
    procs, _ = replicas
    _early_in_a_minute()
    answers = await _burst([p.url for p in procs], "sk-team-rpm-secret", 300, 32)
    statuses = [r.status_code for r in answers]
    ok, limited = statuses.count(200), statuses.count(429)
    print(f"\n300 requests over 2 replicas at 32 concurrent: {ok} x 200, {limited} x 429")
    assert (ok, limited) == (60, 240)
    for resp in answers:
        if resp.status_code == 429:
            _limited(resp, "rate_limit_exceeded")
            assert "60 requests per minute" in resp.json()["error"]["message"]
    # Both replicas admitted some: the limit is the pair's, not each one's.
    served = [
        sum(1 for i, r in enumerate(answers) if i % 2 == k and r.status_code == 200) for k in (0, 1)
    ]
    assert all(served), served


async def test_admitted_tokens_never_exceed_the_limit_across_replicas(
    replicas: tuple[list[Proc], FaultServer],
) -> None:
    procs, solver = replicas
    _early_in_a_minute()
    urls = [p.url for p in procs]
    solver.max_active = 0
    answers = await _burst(urls, "sk-team-tpm-secret", 100, 32)
    # Reserved at admission: never more in flight than reservations fit in the limit.
    assert 1 <= solver.max_active <= TPM // RESERVED
    # One at a time now: each finds the earlier ones settled to their real
    # count (16 tokens, not the 171 reserved), whichever replica settled them.
    answers += [r for u in urls * 3 for r in await _burst([u], "sk-team-tpm-secret", 1, 1)]
    ok = [r for r in answers if r.status_code == 200]
    totals = [r.json()["usage"]["total"] for r in ok]
    spent = sum(t["prompt_tokens"] + t["completion_tokens"] for t in totals)
    print(f"\ntokens/minute {TPM}: {len(ok)} of 106 admitted, {spent} tokens spent")
    assert spent <= TPM
    assert all(r.status_code == 200 for r in answers[-6:])
    for resp in answers:
        if resp.status_code != 200:
            assert resp.status_code == 429
            _limited(resp, "token_limit_exceeded")


async def test_a_budget_stops_the_key_overshooting_by_at_most_what_was_in_flight(
    replicas: tuple[list[Proc], FaultServer],
) -> None:
    """Spend is known when a request ends; admission checks what is spent. So the
    overshoot is at most the requests in flight when the budget was reached
    (here at most the client's 32) times the most one can cost (docs/tenancy.md)."""
    procs, _ = replicas
    urls = [p.url for p in procs]
    answers = await _burst(urls, "sk-team-usd-secret", 100, 32)
    ok = [r for r in answers if r.status_code == 200]
    spent = sum(r.json()["usage"]["total"]["cost_usd"] for r in ok)
    print(
        f"\nbudget {BUDGET} USD at {COST} USD a request, 100 requests at 32 concurrent: "
        f"{len(ok)} admitted, {spent:.3f} USD spent, overshoot {max(0.0, spent - BUDGET):.3f}"
    )
    assert BUDGET <= spent <= BUDGET + 32 * COST + 1e-9
    for resp in answers:
        if resp.status_code != 200:
            assert resp.status_code == 429
            assert resp.json()["error"]["type"] == "budget_exceeded"
    # Spent: every replica refuses the key until midnight UTC.
    after = await _burst(urls, "sk-team-usd-secret", 2, 2)
    for resp in after:
        assert resp.status_code == 429 and resp.json()["error"]["type"] == "budget_exceeded"
        to_midnight = 86400 - int(time.time()) % 86400
        assert abs(int(resp.headers["retry-after"]) - to_midnight) <= 5


def test_the_explicit_opt_out_starts_on_a_public_address_with_a_warning(
    tmp_path: Path,
) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", 0))
    sock.listen()
    with sock, FaultServer("ok") as solver:
        env = _env("", solver.url, tmp_path)
        env.update(DIVCONQ_API_KEYS="[]", DIVCONQ_ALLOW_UNAUTHENTICATED="true")
        del env["DIVCONQ_REDIS_URL"]
        args = [sys.executable, "-m", "service", "serve", "--fd", str(sock.fileno())]
        url = url_of(sock).replace("0.0.0.0", "127.0.0.1")
        log = tmp_path / "open.log"
        proc = start_process(args, env, log, url, pass_fds=(sock.fileno(),))
        try:
            wait_ready(proc, "opted-out service", timeout_s=120)
            resp = httpx.post(f"{url}/solve", json={"question": Q, "mode": "direct"})
            assert resp.status_code == 200, resp.text
        finally:
            proc.stop()
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    warnings = [x for x in lines if x["level"] == "warning" and "without API keys" in x["msg"]]
    assert len(warnings) == 1, log.read_text()[-2000:]
