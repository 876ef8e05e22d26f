"""``GET /v1/usage``: requests, tokens and USD from the ledger, for admin keys.

Grouped by API key name, UTC day or mode over ``[since, until)`` (ISO dates
or date-times, UTC; default the last 30 days). Only admin keys may read it:
every other caller gets 403, so no team sees another's spend.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request

from service.api.auth import require_api_key
from service.api.caller import is_admin
from service.api.state import get_services
from service.core.errors import Forbidden, InvalidRequest, NotReady
from service.core.schemas import ErrorResponse
from service.ledger.report import as_json, iso, time_range

router = APIRouter()


@router.get(
    "/v1/usage",
    dependencies=[Depends(require_api_key)],
    responses={
        code: {"model": ErrorResponse, "description": text}
        for code, text in {
            401: "Missing or invalid API key",
            403: "The key is not an admin key",
            422: "Bad time range or grouping",
            503: "The ledger is disabled (DIVCONQ_LEDGER__ENABLED=false)",
        }.items()
    },
)
async def usage(
    request: Request,
    group_by: Literal["key", "day", "mode"] = Query("key", description="key, day or mode"),
    since: str | None = Query(None, description="ISO date or date-time (UTC); default 30 days ago"),
    until: str | None = Query(
        None,
        description="ISO date or date-time (UTC), exclusive; default now",
    ),
) -> dict[str, Any]:
    """Requests, errors, tokens, USD and cache hits per group, from the request ledger."""
    if not is_admin(request):
        raise Forbidden("usage is for admin keys only")
    ledger = get_services(request).ledger
    if ledger is None:
        raise NotReady("the request ledger is disabled (DIVCONQ_LEDGER__ENABLED=false)")
    try:
        start, end = time_range(since, until, time.time())
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    rows = await ledger.store.usage(group_by, start, end)
    return {"group_by": group_by, "since": iso(start), "until": iso(end), "rows": as_json(rows)}
