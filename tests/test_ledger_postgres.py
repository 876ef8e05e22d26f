"""The request ledger on a real PostgreSQL, behind real service processes.

- 10,000 requests at 64 concurrent, then SIGTERM: every row is there;
- the same burst, then SIGKILL: at most one unflushed batch is lost (the bound
  docs/ledger-and-cache.md states), the figure printed;
- the store itself: migrations once, usage by key/day/mode, recorded questions.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import httpx
import psycopg
import pytest

from service.ledger import LedgerRow, migrations, open_store
from tests.fakes import Q
from tests.real_services import fresh_database
from tests.support import FaultServer, Proc, serve_process, wait_ready

pytestmark = pytest.mark.slow

BATCH = 500


def count_rows(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT COUNT(*) FROM ledger_requests").fetchone()
    assert row is not None
    return int(row[0])


def service(ledger_url: str, solver: FaultServer, log: Path) -> Proc:
    env = {
        "DIVCONQ_LEDGER_URL": ledger_url,
        "DIVCONQ_LEDGER__BATCH_SIZE": str(BATCH),
        "DIVCONQ_DECOMPOSER__BACKEND": "openai",
        "DIVCONQ_DECOMPOSER__BASE_URL": solver.url,
        "DIVCONQ_SOLVER__BASE_URL": solver.url,
        "DIVCONQ_SOLVER__MODEL": "stub",
        "DIVCONQ_MAX_IN_FLIGHT": "256",
        "DIVCONQ_LOG_LEVEL": "warning",
    }
    proc = serve_process(env, log)
    wait_ready(proc, "service with a PostgreSQL ledger", timeout_s=120)
    return proc


async def burst(url: str, n: int, concurrency: int) -> list[int]:
    todo = iter(range(n))
    # Connections idle for a second are not reused: on a loaded machine the
    # server's keep-alive timeout (5 s) could close one just as it is reused.
    limits = httpx.Limits(max_connections=concurrency, keepalive_expiry=1.0)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def worker() -> list[int]:
            out = []
            for i in todo:
                body = {"question": f"{Q} ({i})", "mode": "direct", "cache": False}
                out.append((await client.post("/solve", json=body)).status_code)
            return out

        batches = await asyncio.gather(*(worker() for _ in range(concurrency)))
    return [s for batch in batches for s in batch]


def test_10000_requests_then_sigterm_lose_no_row(postgres_url: str, tmp_path: Path) -> None:
    ledger = fresh_database(postgres_url)
    with FaultServer("ok") as solver:
        proc = service(ledger, solver, tmp_path / "service.log")
        try:
            statuses = asyncio.run(burst(proc.url, 10_000, 64))
        finally:
            # Still running here, or the log says why not.
            assert proc.proc.poll() is None, proc.log.read_text()[-3000:]
            proc.proc.send_signal(signal.SIGTERM)
            code = proc.proc.wait(timeout=120)
    assert statuses == [200] * 10_000
    # uvicorn re-raises SIGTERM once its graceful shutdown (and our lifespan's) is done.
    assert code in (0, -signal.SIGTERM), proc.log.read_text()[-3000:]
    assert count_rows(ledger) == 10_000


def test_sigkill_loses_at_most_one_batch(postgres_url: str, tmp_path: Path) -> None:
    ledger = fresh_database(postgres_url)
    n = 3000
    with FaultServer("ok") as solver:
        proc = service(ledger, solver, tmp_path / "service.log")
        try:
            statuses = asyncio.run(burst(proc.url, n, 64))
        finally:
            # At once after the last answer: the last batch is still queued.
            os.kill(proc.proc.pid, signal.SIGKILL)
            proc.proc.wait(timeout=60)
    rows = count_rows(ledger)
    print(f"\nSIGKILL after {n} requests at 64 concurrent: {rows} rows, {n - rows} lost")
    assert statuses == [200] * n
    assert n - BATCH <= rows <= n


async def test_the_store_migrates_once_and_reports(postgres_url: str) -> None:
    url = fresh_database(postgres_url)
    day = 1764892800.0  # 2025-12-05 00:00 UTC
    rows = [
        LedgerRow("a1", day + 60, "team-a", "solve", "static", 200, 9.0, cost_usd=0.5,
                  solver_prompt_tokens=10, question="How many?"),
        LedgerRow("a2", day + 86400 + 60, "team-a", "solve", "direct", 200, 9.0, cost_usd=0.25),
        LedgerRow("b1", day + 120, "team-b", "solve", "static", 429, 1.0),
    ]  # fmt: skip
    # Two replicas starting together: the schema is created once.
    stores = [open_store(url) for _ in range(2)]
    await asyncio.gather(*(s.open() for s in stores))
    await stores[0].write(rows)
    by_key = await stores[1].usage("key", day, day + 2 * 86400)
    by_day = await stores[1].usage("day", day, day + 2 * 86400)
    by_mode = await stores[1].usage("mode", day, day + 2 * 86400)
    questions = await stores[1].questions(day, day + 2 * 86400)
    deleted = await stores[0].delete_before(day + 86400)
    for s in stores:
        await s.aclose()
    with psycopg.connect(url) as conn:
        versions = conn.execute("SELECT version FROM ledger_schema").fetchall()
    assert versions == [(migrations.VERSION,)]
    assert [(r.group, r.requests, r.errors, r.cost_usd) for r in by_key] == [
        ("team-a", 2, 0, 0.75),
        ("team-b", 1, 1, 0.0),
    ]
    assert [(r.group, r.requests) for r in by_day] == [("2025-12-05", 2), ("2025-12-06", 1)]
    assert [(r.group, r.requests) for r in by_mode] == [("direct", 1), ("static", 2)]
    assert questions == [("How many?", None)] and deleted == 2


async def test_a_dropped_connection_is_made_again_and_the_batch_written(
    postgres_url: str,
) -> None:
    """A server restart or failover drops the connection: the next batch still lands."""
    url = fresh_database(postgres_url)
    store = open_store(url)
    await store.open()
    await store.write([LedgerRow("before", 1.0, "a", "solve", "direct", 200, 1.0)])
    with psycopg.connect(url, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    assert killed == [(True,)], "the store's one connection was dropped"
    await store.write([LedgerRow("after", 2.0, "a", "solve", "direct", 200, 1.0)])
    await store.aclose()
    with psycopg.connect(url) as conn:
        ids = [r[0] for r in conn.execute("SELECT request_id FROM ledger_requests ORDER BY ts")]
    assert ids == ["before", "after"]
