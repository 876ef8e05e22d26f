"""The ledger in SQLite: one file under the data directory, for one node.

The standard library's ``sqlite3`` in a worker thread (the event loop never
waits on the disk), WAL mode so ``divconq usage`` can read while the service
writes. ``synchronous=NORMAL``: a committed batch survives the process being
killed (only a power loss can take the last commits).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from service.ledger import migrations
from service.ledger.base import LedgerUnavailable, Sql, usage_rows
from service.ledger.rows import GroupBy, LedgerRow, UsageRow, values

T = TypeVar("T")
SQL = Sql("?", "strftime('%Y-%m-%d', ts, 'unixepoch')")


class SqliteStore:
    kind = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            assert self._db is not None, "open() first"
            with self._lock:
                return work(self._db)

        return await asyncio.to_thread(locked)

    async def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30.0)
        except (OSError, sqlite3.Error) as exc:
            raise LedgerUnavailable(
                f"DIVCONQ_LEDGER_URL: cannot open the SQLite ledger at {self.path}: {exc}"
            ) from None
        await self._run(_migrate)

    async def write(self, rows: Sequence[LedgerRow]) -> None:
        def insert(db: sqlite3.Connection) -> None:
            with db:
                db.executemany(SQL.insert, [values(r) for r in rows])

        await self._run(insert)

    async def usage(self, group_by: GroupBy, since: float, until: float) -> list[UsageRow]:
        sql = SQL.usage(group_by)
        return usage_rows(await self._run(lambda db: db.execute(sql, (since, until)).fetchall()))

    async def questions(self, since: float, until: float) -> list[tuple[str, str | None]]:
        rows = await self._run(lambda db: db.execute(SQL.questions, (since, until)).fetchall())
        return [(str(q), c) for q, c in rows]

    async def delete_before(self, ts: float) -> int:
        def delete(db: sqlite3.Connection) -> int:
            with db:
                return db.execute(SQL.delete_before, (ts,)).rowcount

        return await self._run(delete)

    async def aclose(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None

            def close() -> None:
                # Under the lock: a statement still running in another thread (a
                # retention delete whose task was cancelled) must end first, as
                # closing a connection in use crashes the process (a segfault).
                with self._lock:
                    db.close()

            await asyncio.to_thread(close)


def _migrate(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    # BEGIN IMMEDIATE: two processes starting on one file migrate one after the other.
    db.isolation_level = None
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute(migrations.VERSION_TABLE)
        row = db.execute("SELECT MAX(version) FROM ledger_schema").fetchone()
        current = int(row[0] or 0)
        for version, statements in migrations.pending(current, "INTEGER PRIMARY KEY AUTOINCREMENT"):
            for statement in statements:
                db.execute(statement)
            db.execute("DELETE FROM ledger_schema")
            db.execute("INSERT INTO ledger_schema (version) VALUES (?)", (version,))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    finally:
        db.isolation_level = "DEFERRED"
