"""Optional bearer-key auth for the API endpoints (DIVCONQ_API_KEYS).

/healthz, /readyz and /metrics stay open for probes and scrapers. Keys are
compared in constant time and never logged or echoed.
"""

from __future__ import annotations

import hmac

from fastapi import Request

from service.api.state import get_services
from service.core.errors import Unauthorized


async def require_api_key(request: Request) -> None:
    keys = get_services(request).settings.api_keys
    if not keys:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and given:
        # Check every key (no early exit) so timing does not tell which matched.
        matches = [hmac.compare_digest(given.encode(), k.get_secret_value().encode()) for k in keys]
        if any(matches):
            return
    raise Unauthorized(
        "missing or invalid API key (Authorization: Bearer <key>)",
        headers={"WWW-Authenticate": "Bearer"},
    )
