"""What every ledger store is: its Protocol, its error, and the SQL both dialects share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from service.ledger.rows import COLUMNS, GroupBy, LedgerRow, UsageRow


class LedgerUnavailable(Exception):
    """The ledger's database cannot be reached or used; the message names the setting."""


class LedgerStore(Protocol):
    kind: str  # "sqlite", "postgresql": shown in /readyz

    async def open(self) -> None:
        """Connect and migrate the schema; ``LedgerUnavailable`` if the database is not there."""
        ...

    async def write(self, rows: Sequence[LedgerRow]) -> None:
        """Insert rows in one transaction."""
        ...

    async def usage(self, group_by: GroupBy, since: float, until: float) -> list[UsageRow]: ...

    async def questions(self, since: float, until: float) -> list[tuple[str, str | None]]:
        """(question, context) of the recorded successful requests, oldest first."""
        ...

    async def delete_before(self, ts: float) -> int: ...

    async def aclose(self) -> None: ...


class Sql:
    """The statements, for a dialect's placeholder and day expression."""

    def __init__(self, placeholder: str, day: str) -> None:
        cols = ", ".join(COLUMNS)
        marks = ", ".join([placeholder] * len(COLUMNS))
        self.insert = f"INSERT INTO ledger_requests ({cols}) VALUES ({marks})"
        self.group = {"key": "key_name", "mode": "COALESCE(mode, 'none')", "day": day}
        self.p = placeholder

    def usage(self, group_by: GroupBy) -> str:
        p = self.p
        return (
            f"SELECT {self.group[group_by]} AS grp, COUNT(*), "
            "SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), "
            "SUM(decomposer_prompt_tokens + solver_prompt_tokens), "
            "SUM(decomposer_completion_tokens + solver_completion_tokens), "
            "SUM(cost_usd), SUM(cache_hits) "
            f"FROM ledger_requests WHERE ts >= {p} AND ts < {p} GROUP BY grp ORDER BY grp"
        )

    @property
    def questions(self) -> str:
        p = self.p
        return (
            "SELECT question, context FROM ledger_requests WHERE question IS NOT NULL "
            f"AND status = 200 AND ts >= {p} AND ts < {p} ORDER BY ts, row_id"
        )

    @property
    def delete_before(self) -> str:
        return f"DELETE FROM ledger_requests WHERE ts < {self.p}"


def usage_rows(rows: Sequence[Sequence[object]]) -> list[UsageRow]:
    return [
        UsageRow(
            group=str(r[0]),
            requests=int(str(r[1])),
            errors=int(str(r[2] or 0)),
            prompt_tokens=int(str(r[3] or 0)),
            completion_tokens=int(str(r[4] or 0)),
            cost_usd=float(str(r[5] or 0.0)),
            cache_hits=int(str(r[6] or 0)),
        )
        for r in rows
    ]
