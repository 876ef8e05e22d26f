"""Where ledger rows live: the store for a URL.

``open_store(url)`` picks the store by the URL's scheme: ``sqlite:///path``
(one node; the default, under the data directory) or ``postgresql://``
(``postgres://``; shared by many replicas). Both migrate the schema on
``open()`` (``service.ledger.migrations``).
"""

from __future__ import annotations

from pathlib import Path

from service.ledger.base import LedgerStore, LedgerUnavailable


def default_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'ledger.sqlite3'}"


def open_store(url: str) -> LedgerStore:
    scheme = url.partition("://")[0].lower()
    if scheme == "sqlite":
        from service.ledger.sqlite_store import SqliteStore

        # sqlite:///abs/path (and SQLAlchemy's sqlite:////abs/path)
        path = url.partition("://")[2]
        return SqliteStore(Path("/" + path.lstrip("/") if path.startswith("/") else path))
    if scheme in ("postgresql", "postgres"):
        from service.ledger.postgres_store import PostgresStore

        return PostgresStore(url)
    raise LedgerUnavailable(
        f"DIVCONQ_LEDGER_URL: unknown scheme {scheme!r}; use postgresql://... or sqlite:///path"
    )
