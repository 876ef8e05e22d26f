"""``divconq usage``: the ledger's report on the command line, and the serve pre-flight.

``usage`` reads the ledger directly (``--ledger URL``, default the service's
own: ``DIVCONQ_LEDGER_URL`` or SQLite under the data directory), so an
operator needs database access, not an admin API key.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from service.core.settings import Settings
from service.ledger import GROUPS, LedgerUnavailable, UsageRow, open_store
from service.ledger.report import as_json, iso, time_range


async def _usage(url: str, group_by: Any, since: float, until: float) -> list[UsageRow]:
    store = open_store(url)
    await store.open()
    try:
        return await store.usage(group_by, since, until)
    finally:
        await store.aclose()


def cmd_usage(args: argparse.Namespace, settings: Settings) -> int:
    from service.api.app import ledger_url

    url = args.ledger or ledger_url(settings)
    try:
        since, until = time_range(args.since, args.until, time.time())
        rows = asyncio.run(_usage(url, args.by, since, until))
    except (ValueError, LedgerUnavailable) as exc:
        raise SystemExit(str(exc)) from None
    if args.json:
        report = {"group_by": args.by, "since": iso(since), "until": iso(until)}
        print(json.dumps({**report, "rows": as_json(rows)}, indent=2))
        return 0
    print(f"{args.by} usage from {iso(since)} to {iso(until)}")
    header = f"{args.by:<24}{'requests':>10}{'errors':>8}{'prompt':>12}{'output':>12}{'usd':>14}"
    print(header + f"{'cached':>8}")
    for r in rows:
        print(
            f"{r.group[:23]:<24}{r.requests:>10}{r.errors:>8}{r.prompt_tokens:>12}"
            f"{r.completion_tokens:>12}{r.cost_usd:>14.6f}{r.cache_hits:>8}"
        )
    return 0


async def _preflight(settings: Settings) -> None:
    from service.api.app import ledger_url
    from service.cache.cache import store_url
    from service.cache.stores import CacheUnavailable
    from service.cache.stores import open_store as open_cache

    if settings.ledger.enabled:
        store = open_store(ledger_url(settings))
        await store.open()
        await store.aclose()
    url = store_url(settings)
    # DIVCONQ_REDIS_URL itself is checked with the limits' store (service.tenancy).
    if settings.cache.enabled and settings.cache.url and url != "memory":
        cache = open_cache(url, max_entries=1, timeout_s=max(settings.cache.timeout_s, 2.0))
        setting = "DIVCONQ_CACHE__URL"
        try:
            await cache.check()
        except CacheUnavailable as exc:
            raise LedgerUnavailable(f"{setting}: cannot reach Redis: {exc}") from None
        finally:
            await cache.aclose()


def preflight(settings: Settings) -> str | None:
    """The one-line reason the service cannot start (a store it needs is not there), or None."""
    try:
        asyncio.run(_preflight(settings))
    except (LedgerUnavailable, ValueError) as exc:
        return str(exc)
    return None


def add_parser(sub: Any) -> None:
    usage = sub.add_parser("usage", help="requests, tokens and USD from the request ledger")
    usage.add_argument("--by", choices=GROUPS, default="key", help="group by (default: key)")
    usage.add_argument("--since", help="ISO date or date-time, UTC (default: 30 days ago)")
    usage.add_argument("--until", help="ISO date or date-time, UTC, exclusive (default: now)")
    usage.add_argument("--ledger", help="ledger URL (default: the service's own)")
    usage.add_argument("--json", action="store_true", help="print JSON")
    usage.set_defaults(func=cmd_usage)
