"""The request ledger: one row per API request, written off the request path.

``rows.py`` says what a row holds, ``stores.py`` where rows live (SQLite by
default, PostgreSQL for many replicas; ``migrations.py`` versions the
schema), ``writer.py`` how rows get there (a bounded queue, batches, a flush
at shutdown), ``report.py`` how they are read back (usage by key, day or
mode; recorded questions for distillation).
"""

from service.ledger.base import LedgerStore, LedgerUnavailable
from service.ledger.rows import GROUPS, GroupBy, LedgerRow, UsageRow
from service.ledger.stores import default_url, open_store
from service.ledger.writer import LedgerWriter

__all__ = [
    "GROUPS",
    "GroupBy",
    "LedgerRow",
    "LedgerStore",
    "LedgerUnavailable",
    "LedgerWriter",
    "UsageRow",
    "default_url",
    "open_store",
]
