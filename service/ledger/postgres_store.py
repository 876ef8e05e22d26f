"""The ledger in PostgreSQL: one database for every replica (``DIVCONQ_LEDGER_URL``).

psycopg 3's async connection, made again when the server drops it (a restart,
a failover); a batch is one ``executemany`` in one transaction. Migrations
take a transaction-scoped advisory lock, so replicas starting together
migrate once. Nothing here logs the URL (it holds a
password): errors name the host, port and database only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from service.ledger import migrations
from service.ledger.base import LedgerUnavailable, Sql, usage_rows
from service.ledger.rows import GroupBy, LedgerRow, UsageRow, values

SQL = Sql("%s", "to_char(to_timestamp(ts) AT TIME ZONE 'UTC', 'YYYY-MM-DD')")
# pg_advisory_xact_lock's key: any constant the service alone uses.
MIGRATION_LOCK = 0x646976636F6E71


def _where(url: str) -> str:
    try:
        info = conninfo_to_dict(url)
    except Exception:
        return "the configured server"
    return f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


class PostgresStore:
    kind = "postgresql"

    def __init__(self, url: str, connect_timeout_s: float = 5.0) -> None:
        self._url = url
        self._timeout = connect_timeout_s
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        try:
            return await psycopg.AsyncConnection.connect(
                self._url, connect_timeout=max(1, int(self._timeout))
            )
        except psycopg.Error as exc:
            reason = " ".join(line.strip() for line in str(exc).splitlines()) or type(exc).__name__
            raise LedgerUnavailable(
                f"DIVCONQ_LEDGER_URL: cannot connect to PostgreSQL at {_where(self._url)}: {reason}"
            ) from None

    async def _live(self) -> psycopg.AsyncConnection[Any]:
        """The connection, made again if the server dropped it (a restart, a failover).
        Call with the lock held."""
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                with contextlib.suppress(psycopg.Error):
                    await conn.close()
            self._conn = conn = await self._connect()
        return conn

    async def open(self) -> None:
        async with self._lock:
            await self._live()
        await self._migrate()

    async def _migrate(self) -> None:
        async with self._lock:
            db = await self._live()
            async with db.transaction():
                await db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                await db.execute(migrations.VERSION_TABLE)
                cur = await db.execute("SELECT MAX(version) FROM ledger_schema")
                row = await cur.fetchone()
                current = int(str(row[0])) if row and row[0] is not None else 0
                for version, statements in migrations.pending(current, "BIGSERIAL PRIMARY KEY"):
                    for statement in statements:
                        await db.execute(statement)
                    await db.execute("DELETE FROM ledger_schema")
                    await db.execute("INSERT INTO ledger_schema (version) VALUES (%s)", (version,))

    async def write(self, rows: Sequence[LedgerRow]) -> None:
        """One transaction; once more on a new connection if the server dropped the old
        one (the batch was not committed then: it is written once)."""
        params = [values(r) for r in rows]
        async with self._lock:
            for attempt in (1, 2):
                db = await self._live()
                try:
                    async with db.transaction(), db.cursor() as cur:
                        await cur.executemany(SQL.insert, params)
                    return
                except psycopg.OperationalError:
                    if attempt == 2 or not db.broken:
                        raise

    async def _fetch(self, sql: str, params: tuple[object, ...]) -> list[tuple[object, ...]]:
        async with self._lock:
            db = await self._live()
            async with db.transaction():
                cur = await db.execute(sql, params)
                return await cur.fetchall()

    async def usage(self, group_by: GroupBy, since: float, until: float) -> list[UsageRow]:
        return usage_rows(await self._fetch(SQL.usage(group_by), (since, until)))

    async def questions(self, since: float, until: float) -> list[tuple[str, str | None]]:
        rows = await self._fetch(SQL.questions, (since, until))
        return [(str(q), None if c is None else str(c)) for q, c in rows]

    async def delete_before(self, ts: float) -> int:
        async with self._lock:
            db = await self._live()
            async with db.transaction():
                cur = await db.execute(SQL.delete_before, (ts,))
                return int(cur.rowcount)

    async def aclose(self) -> None:
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                await conn.close()
