"""The ledger's schema, versioned: each step runs once, in order, at start-up.

``ledger_schema`` holds the version reached. A new column or index is a new
step appended here (never an edit of an old one), so a replica started on a
newer build migrates the shared database and older rows stay readable.
``{serial}`` is the dialect's auto-increment key.
"""

from __future__ import annotations

STEPS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE ledger_requests (
            row_id {serial},
            request_id TEXT NOT NULL,
            ts DOUBLE PRECISION NOT NULL,
            key_name TEXT NOT NULL,
            endpoint TEXT NOT NULL,
            mode TEXT,
            status INTEGER NOT NULL,
            latency_ms DOUBLE PRECISION NOT NULL,
            decomposer_calls INTEGER NOT NULL,
            decomposer_prompt_tokens INTEGER NOT NULL,
            decomposer_completion_tokens INTEGER NOT NULL,
            decomposer_ms DOUBLE PRECISION NOT NULL,
            decomposer_model TEXT,
            adapter TEXT,
            solver_calls INTEGER NOT NULL,
            solver_prompt_tokens INTEGER NOT NULL,
            solver_completion_tokens INTEGER NOT NULL,
            solver_ms DOUBLE PRECISION NOT NULL,
            solver_model TEXT,
            answered_by TEXT,
            cost_usd DOUBLE PRECISION NOT NULL,
            cache_hits INTEGER NOT NULL,
            cached BOOLEAN NOT NULL,
            question TEXT,
            context TEXT,
            subquestions TEXT,
            answer TEXT
        )""",
        "CREATE INDEX ledger_requests_ts ON ledger_requests (ts)",
        "CREATE INDEX ledger_requests_key_ts ON ledger_requests (key_name, ts)",
        "CREATE INDEX ledger_requests_request_id ON ledger_requests (request_id)",
    ),
    # 2: each stage's cost, beside the total (rows from before read 0).
    (
        "ALTER TABLE ledger_requests ADD COLUMN decomposer_cost_usd DOUBLE PRECISION "
        "NOT NULL DEFAULT 0",
        "ALTER TABLE ledger_requests ADD COLUMN solver_cost_usd DOUBLE PRECISION "
        "NOT NULL DEFAULT 0",
    ),
)

VERSION = len(STEPS)
VERSION_TABLE = "CREATE TABLE IF NOT EXISTS ledger_schema (version INTEGER NOT NULL)"


def pending(current: int, serial: str) -> list[tuple[int, list[str]]]:
    """The steps after ``current``: (version reached, its statements)."""
    return [
        (i + 1, [s.replace("{serial}", serial) for s in step])
        for i, step in enumerate(STEPS)
        if i + 1 > current
    ]
