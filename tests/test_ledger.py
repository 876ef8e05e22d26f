"""The request ledger in process, on SQLite: one row per request, batched off the
request path, flushed at shutdown, content only when asked; the usage report."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from service.core.settings import LedgerSettings
from service.ledger import LedgerRow, LedgerUnavailable, LedgerWriter, migrations, open_store
from service.observability.metrics import Metrics
from tests.fakes import KEY, FakeDecomposer, Q, ScriptedSolver, metric, serve, settings_for
from tests.support import FaultServer, refused_start

PLAN = "1. How many apples does Tom have at first?\n2. How many does he buy?"
PRICED = {"big-solver": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}


def ledger_settings(path: Path, **ledger: Any) -> dict[str, Any]:
    return {"ledger_url": f"sqlite:///{path}", "ledger": ledger}


def rows(path: Path, where: str = "1=1") -> list[dict[str, Any]]:
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute(f"SELECT * FROM ledger_requests WHERE {where}")]
    finally:
        db.close()


async def test_every_api_request_gets_one_row_with_its_accounting(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite3"
    settings = settings_for(prices=PRICED, **ledger_settings(db))
    async with serve(settings, ScriptedSolver("ok"), FakeDecomposer(PLAN)) as client:
        ok = await client.post("/solve", json={"question": Q, "mode": "static"})
        bad = await client.post("/solve", json={"question": ""})
        await client.post("/decompose", json={"question": Q})
        chat = await client.post(
            "/v1/chat/completions",
            json={"model": "divconq-direct", "messages": [{"role": "user", "content": Q}]},
        )
        await client.get("/healthz")
    assert ok.status_code == 200 and bad.status_code == 422 and chat.status_code == 200
    recorded = {r["request_id"]: r for r in rows(db)}
    assert len(recorded) == 4, rows(db)
    solved = recorded[ok.json()["id"]]
    usage = ok.json()["usage"]
    assert solved["endpoint"] == "solve" and solved["mode"] == "static"
    assert solved["status"] == 200 and solved["key_name"] == "anonymous"
    assert solved["solver_calls"] == usage["solver"]["calls"] == 3
    assert solved["solver_prompt_tokens"] == usage["solver"]["prompt_tokens"]
    assert solved["decomposer_completion_tokens"] == usage["decomposer"]["completion_tokens"]
    assert solved["cost_usd"] == pytest.approx(usage["total"]["cost_usd"])
    assert solved["solver_cost_usd"] == pytest.approx(usage["solver"]["cost_usd"])
    assert solved["solver_cost_usd"] > 0
    assert solved["decomposer_cost_usd"] == usage["decomposer"]["cost_usd"] == 0.0
    assert solved["solver_model"] == "big-solver" and solved["answered_by"] == "default"
    assert solved["decomposer_model"] == "fake-decomposer"
    assert solved["adapter"] == usage["decomposer"]["adapter"]
    assert solved["latency_ms"] >= ok.json()["latency_ms"] > 0
    assert abs(solved["ts"] - time.time()) < 60
    assert (solved["question"], solved["answer"], solved["subquestions"]) == (None, None, None)
    statuses = sorted((r["endpoint"], r["status"]) for r in recorded.values())
    assert statuses == [
        ("chat_completions", 200),
        ("decompose", 200),
        ("solve", 200),
        ("solve", 422),
    ]


async def test_content_is_stored_only_when_asked(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite3"
    settings = settings_for(**ledger_settings(db, content=True))
    async with serve(settings, ScriptedSolver("ok"), FakeDecomposer(PLAN)) as client:
        body = (
            await client.post(
                "/solve", json={"question": Q, "mode": "static", "context": "Tom farms."}
            )
        ).json()
    [row] = rows(db)
    assert (row["question"], row["context"]) == (Q, "Tom farms.")
    assert row["answer"] == body["answer_text"]
    subs = json.loads(row["subquestions"])
    assert [s["question"] for s in subs] == [s["question"] for s in body["subquestions"]]
    assert [s["answer"] for s in subs] == [s["answer"] for s in body["subquestions"]]


async def test_a_cache_hit_is_recorded_as_free(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite3"
    settings = settings_for(prices=PRICED, **ledger_settings(db))
    async with serve(settings, ScriptedSolver("ok"), FakeDecomposer(PLAN)) as client:
        for _ in range(2):
            await client.post("/solve", json={"question": Q, "mode": "static"})
    first, second = sorted(rows(db), key=lambda r: r["row_id"])
    assert (first["cached"], first["cache_hits"]) == (0, 0) and first["cost_usd"] > 0
    assert (second["cached"], second["cache_hits"], second["cost_usd"]) == (1, 4, 0.0)
    assert second["solver_calls"] == 0


async def test_a_burst_at_64_concurrent_is_all_there_after_shutdown(tmp_path: Path) -> None:
    """Shutdown (what SIGTERM runs) flushes the queue: not one row is lost.

    2,000 requests keep the fast tier fast; the 10,000-request burst and a
    real SIGTERM run against PostgreSQL in tests/test_ledger_postgres.py.
    """
    db = tmp_path / "ledger.sqlite3"
    n, concurrency = 2_000, 64
    settings = settings_for(cache={"enabled": False}, **ledger_settings(db))
    async with serve(settings, ScriptedSolver("ok")) as client:
        todo = iter(range(n))

        async def worker() -> list[int]:
            return [
                (
                    await client.post("/solve", json={"question": f"{Q} ({i})", "mode": "direct"})
                ).status_code
                for i in todo
            ]

        batches = await asyncio.gather(*[worker() for _ in range(concurrency)])
        statuses = [s for batch in batches for s in batch]
        dropped = await metric(client, "divconq_ledger_rows_total", outcome="dropped")
    assert statuses == [200] * n and dropped == 0
    assert len(rows(db)) == n


class _SlowStore:
    """A store that takes ``delay_s`` per batch and remembers what it got."""

    kind = "slow"

    def __init__(self, delay_s: float = 0.0, fail: bool = False) -> None:
        self.delay_s, self.fail = delay_s, fail
        self.batches: list[list[LedgerRow]] = []
        self.closed = False

    async def open(self) -> None:
        return None

    async def write(self, rows: Sequence[LedgerRow]) -> None:
        await asyncio.sleep(self.delay_s)
        if self.fail:
            raise OSError("disk full")
        self.batches.append(list(rows))

    async def usage(self, *args: Any) -> list[Any]:
        return []

    async def questions(self, *args: Any) -> list[Any]:
        return []

    async def delete_before(self, ts: float) -> int:
        return 0

    async def aclose(self) -> None:
        self.closed = True


def row(i: int) -> LedgerRow:
    return LedgerRow(f"r{i}", time.time(), "team-a", "solve", "direct", 200, 1.0)


async def test_a_full_queue_drops_and_counts_and_never_blocks() -> None:
    metrics, store = Metrics(), _SlowStore(delay_s=0.2)
    writer = LedgerWriter(store, LedgerSettings(queue_size=3, batch_size=2), metrics)
    writer.start()
    accepted = [writer.record(row(i)) for i in range(5)]
    # record() returned five times before the writer wrote anything: it never waits.
    written_meanwhile = len(store.batches)
    await writer.aclose()
    assert accepted == [True, True, True, False, False]
    assert metrics.ledger_rows.labels("dropped")._value.get() == 2
    assert [r.request_id for b in store.batches for r in b] == ["r0", "r1", "r2"]
    assert [len(b) for b in store.batches] == [2, 1] and store.closed
    assert written_meanwhile == 0


async def test_rows_are_written_in_batches_and_a_failed_batch_is_counted() -> None:
    metrics, store = Metrics(), _SlowStore()
    settings = LedgerSettings(batch_size=4, flush_interval_s=30.0)
    writer = LedgerWriter(store, settings, metrics)
    writer.start()
    for i in range(10):
        writer.record(row(i))
    await asyncio.sleep(0.05)
    # Two full batches went at once; the last two wait for the interval or shutdown.
    assert [len(b) for b in store.batches] == [4, 4]
    await writer.aclose()
    assert [len(b) for b in store.batches] == [4, 4, 2]
    failing = _SlowStore(fail=True)
    writer = LedgerWriter(failing, LedgerSettings(), metrics)
    writer.start()
    writer.record(row(0))
    await writer.aclose()
    assert metrics.ledger_rows.labels("failed")._value.get() == 1
    assert writer.status()["last_batch_written"] is False
    assert metrics.ledger_rows.labels("written")._value.get() == 10


async def test_the_schema_is_versioned_and_migrates_once(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite3"
    for _ in range(2):
        store = open_store(f"sqlite:///{db}")
        await store.open()
        await store.write([row(1)])
        await store.aclose()
    conn = sqlite3.connect(db)
    versions = conn.execute("SELECT version FROM ledger_schema").fetchall()
    count = conn.execute("SELECT COUNT(*) FROM ledger_requests").fetchone()[0]
    conn.close()
    assert versions == [(migrations.VERSION,)] and count == 2


async def test_a_database_of_an_older_schema_migrates_and_keeps_its_rows(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite3"
    conn = sqlite3.connect(db)
    conn.execute(migrations.VERSION_TABLE)
    [(version, statements)] = migrations.pending(0, "INTEGER PRIMARY KEY AUTOINCREMENT")[:1]
    for statement in statements:
        conn.execute(statement)
    conn.execute("INSERT INTO ledger_schema (version) VALUES (?)", (version,))
    conn.execute(
        "INSERT INTO ledger_requests (request_id, ts, key_name, endpoint, status, latency_ms, "
        "decomposer_calls, decomposer_prompt_tokens, decomposer_completion_tokens, "
        "decomposer_ms, solver_calls, solver_prompt_tokens, solver_completion_tokens, "
        "solver_ms, cost_usd, cache_hits, cached) "
        "VALUES ('v1', 1.0, 'a', 'solve', 200, 1.0, 0, 0, 0, 0, 1, 10, 5, 3.0, 0.5, 0, 0)"
    )
    conn.commit()
    conn.close()
    store = open_store(f"sqlite:///{db}")
    await store.open()
    await store.write([LedgerRow("v2", 2.0, "a", "solve", None, 200, 1.0, solver_cost_usd=0.25)])
    await store.aclose()
    assert version == 1 < migrations.VERSION
    got = {r["request_id"]: r for r in rows(db)}
    assert (got["v1"]["cost_usd"], got["v1"]["solver_cost_usd"]) == (0.5, 0.0)
    assert got["v2"]["solver_cost_usd"] == 0.25
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT version FROM ledger_schema").fetchall() == [(migrations.VERSION,)]
    conn.close()


async def test_retention_deletes_old_rows_at_start(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite3"
    store = open_store(f"sqlite:///{db}")
    await store.open()
    old = LedgerRow("old", time.time() - 10 * 86400, "a", "solve", "direct", 200, 1.0)
    await store.write([old, row(1)])
    await store.aclose()
    settings = settings_for(**ledger_settings(db, retention_days=7))
    async with serve(settings, ScriptedSolver("ok")):
        for _ in range(100):
            if len(rows(db)) == 1:
                break
            await asyncio.sleep(0.02)
    assert [r["request_id"] for r in rows(db)] == ["r1"]


async def test_usage_groups_requests_tokens_and_usd_over_a_range(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    await store.open()
    day = 1764892800.0  # 2025-12-05 00:00 UTC

    def spent(key: str, ts: float, mode: str, status: int, usd: float) -> LedgerRow:
        return LedgerRow(
            "x", ts, key, "solve", mode, status, 5.0, solver_prompt_tokens=10,
            solver_completion_tokens=3, decomposer_prompt_tokens=1, cost_usd=usd,
        )  # fmt: skip

    await store.write(
        [
            spent("team-a", day + 60, "static", 200, 0.5),
            spent("team-a", day + 86400 + 60, "direct", 200, 0.25),
            spent("team-b", day + 120, "static", 429, 0.0),
            spent("team-b", day - 60, "static", 200, 9.0),  # before the range
        ]
    )
    by_key = await store.usage("key", day, day + 2 * 86400)
    by_day = await store.usage("day", day, day + 2 * 86400)
    by_mode = await store.usage("mode", day, day + 2 * 86400)
    await store.aclose()
    assert [(r.group, r.requests, r.errors, r.prompt_tokens, r.cost_usd) for r in by_key] == [
        ("team-a", 2, 0, 22, 0.75),
        ("team-b", 1, 1, 11, 0.0),
    ]
    assert [(r.group, r.requests) for r in by_day] == [("2025-12-05", 2), ("2025-12-06", 1)]
    assert [(r.group, r.requests, r.completion_tokens) for r in by_mode] == [
        ("direct", 1, 3),
        ("static", 2, 6),
    ]


async def test_usage_endpoint_reports_per_key_for_admin_keys_only(tmp_path: Path) -> None:
    keys = [
        {"name": "team-a", "key": "sk-team-a-secret"},
        {"name": "team-b", "key": "sk-team-b-secret"},
        {"name": "ops", "key": KEY, "admin": True},
    ]
    settings = settings_for(api_keys=keys, prices=PRICED, **ledger_settings(tmp_path / "l.db"))

    def as_(team: str) -> dict[str, str]:
        return {"Authorization": f"Bearer sk-{team}-secret"}

    async with serve(settings, ScriptedSolver("ok")) as client:
        for team, n in (("team-a", 2), ("team-b", 1)):
            for i in range(n):
                body = {"question": f"{Q} ({i})", "mode": "direct"}
                assert (await client.post("/solve", json=body, headers=as_(team))).is_success
        await client.post("/solve", json={"question": ""}, headers=as_("team-b"))
        anonymous = await client.get("/v1/usage")
        not_admin = await client.get("/v1/usage", headers=as_("team-a"))
        # Rows are written off the request path: wait for the batch (a flush interval).
        for _ in range(100):
            report = await client.get(
                "/v1/usage", params={"group_by": "key"}, headers={"Authorization": f"Bearer {KEY}"}
            )
            if sum(r["requests"] for r in report.json()["rows"]) >= 4:
                break
            await asyncio.sleep(0.05)
        bad_range = await client.get(
            "/v1/usage", params={"since": "yesterday"}, headers={"Authorization": f"Bearer {KEY}"}
        )
    assert anonymous.status_code == 401
    assert not_admin.status_code == 403 and not_admin.json()["error"]["type"] == "forbidden"
    assert bad_range.status_code == 422
    assert report.status_code == 200, report.text
    by_key = {r["group"]: r for r in report.json()["rows"]}
    assert set(by_key) == {"team-a", "team-b"}
    assert (by_key["team-a"]["requests"], by_key["team-a"]["errors"]) == (2, 0)
    assert (by_key["team-b"]["requests"], by_key["team-b"]["errors"]) == (2, 1)
    assert by_key["team-a"]["cost_usd"] == pytest.approx(2 * (11 * 1.0 + 5 * 2.0) / 1e6)
    assert "sk-team" not in report.text


def test_usage_cli_reports_from_the_ledger(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite3"

    async def fill() -> None:
        store = open_store(f"sqlite:///{db}")
        await store.open()
        await store.write([row(1), row(2)])
        await store.aclose()

    asyncio.run(fill())
    out = subprocess.run(
        [sys.executable, "-m", "service", "usage", "--ledger", f"sqlite:///{db}", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(out.stdout)
    assert report["group_by"] == "key"
    assert [(r["group"], r["requests"]) for r in report["rows"]] == [("team-a", 2)]


async def test_an_unreachable_postgresql_is_one_clear_error_naming_the_setting() -> None:
    store = open_store("postgresql://divconq:s3cret-pw@127.0.0.1:1/ledger")
    with pytest.raises(LedgerUnavailable) as caught:
        await store.open()
    message = str(caught.value)
    assert message.startswith("DIVCONQ_LEDGER_URL: cannot connect to PostgreSQL at 127.0.0.1:1")
    assert "s3cret-pw" not in message and "\n" not in message


@pytest.mark.parametrize(
    ("setting", "url"),
    [
        ("DIVCONQ_LEDGER_URL", "postgresql://divconq:s3cret-pw@127.0.0.1:1/ledger"),
        ("DIVCONQ_CACHE__URL", "redis://:s3cret-pw@127.0.0.1:1/0"),
    ],
)
def test_serve_refuses_to_start_without_its_ledger_or_cache_store(setting: str, url: str) -> None:
    env = {
        setting: url,
        "DIVCONQ_DECOMPOSER__BACKEND": "openai",
        "DIVCONQ_DECOMPOSER__BASE_URL": "http://127.0.0.1:1/v1",
        "DIVCONQ_SOLVER__BASE_URL": "http://127.0.0.1:1/v1",
        "DIVCONQ_SOLVER__MODEL": "m",
        "DIVCONQ_PORT": "0",
    }
    line = refused_start(env, timeout=60)
    assert setting in line and "s3cret-pw" not in line


def test_distill_data_takes_the_recorded_questions_for_a_teacher(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite3"
    asked = "A shop sells 12 pens a day. How many pens does it sell in 5 days?"

    def recorded(i: int, question: str | None, status: int = 200) -> LedgerRow:
        return LedgerRow(
            f"r{i}", time.time(), "a", "solve", "static", status, 1.0, question=question
        )

    async def fill() -> None:
        store = open_store(f"sqlite:///{db}")
        await store.open()
        await store.write(
            [
                recorded(1, asked),
                recorded(2, asked),  # asked twice: one problem
                recorded(3, None),  # recorded without content
                recorded(4, "Failed question?", status=502),
            ]
        )
        await store.aclose()

    asyncio.run(fill())
    plan = "1. How many pens does it sell in one day?\n2. How many in 5 days?"
    out = tmp_path / "data"
    with FaultServer(f"say:{plan}") as teacher:
        env = {
            **os.environ,
            "DIVCONQ_DECOMPOSER__BACKEND": "openai",
            "DIVCONQ_DECOMPOSER__BASE_URL": teacher.url,
            "DIVCONQ_SOLVER__BASE_URL": teacher.url,
            "DIVCONQ_SOLVER__MODEL": "teacher",
        }
        args = ["distill", "data", "--from-ledger", f"sqlite:///{db}", "--teacher", "default"]
        # The teacher's recipe, then one that needs answers a ledger does not hold.
        proc, refused = (
            subprocess.run(
                [sys.executable, "-m", "service", *args, "--recipe", recipe, "--out", str(out)],
                capture_output=True,
                text=True,
                env=env,
                timeout=120,
            )
            for recipe in ("sd-t", "sd-r")
        )
    assert proc.returncode == 0, proc.stderr
    assert teacher.hits == 1, "one teacher call per recorded question"
    train = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    taught = [r for r in train if r["source"] == "sd-t"]
    assert [(r["question"], r["subquestions"]) for r in taught] == [
        (asked, ["How many pens does it sell in one day?", "How many in 5 days?"])
    ]
    assert refused.returncode != 0 and "--recipe sd-t" in refused.stderr


async def test_readyz_shows_where_rows_and_cache_entries_go(tmp_path: Path) -> None:
    on = settings_for(**ledger_settings(tmp_path / "l.db", content=True))
    off = settings_for(ledger={"enabled": False}, cache={"enabled": False})
    async with serve(on, ScriptedSolver("ok")) as client:
        ready_on = (await client.get("/readyz")).json()
    async with serve(off, ScriptedSolver("ok")) as client:
        ready_off = (await client.get("/readyz")).json()
    assert ready_on["ledger"] == {
        "enabled": True,
        "store": "sqlite",
        "content": True,
        "queued": 0,
        "queue_size": 10000,
        "last_batch_written": True,
    }
    assert ready_on["cache"] == {"enabled": True, "store": "memory"}
    assert ready_off["ledger"] == {"enabled": False}
    assert ready_off["cache"]["enabled"] is False
