"""Bearer-key auth for the API endpoints (DIVCONQ_API_KEYS), and who a request is.

/healthz, /readyz and /metrics stay open for probes and scrapers. Keys are
compared in constant time and never logged or echoed.

The key a request authenticated with is its tenant: it goes on the request
record (``RequestRecord.api_key``); ``service.api.caller`` reads it.
"""

from __future__ import annotations

import hmac

from fastapi import Request

from service.api.request_record import record_of
from service.api.state import get_services
from service.core.errors import Unauthorized


async def require_api_key(request: Request) -> None:
    keys = get_services(request).settings.api_keys
    if not keys:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and given:
        secret = given.encode()
        # Check every key (no early exit) so timing does not tell which matched.
        matches = [hmac.compare_digest(secret, k.key.get_secret_value().encode()) for k in keys]
        for key, matched in zip(keys, matches, strict=True):
            if matched:
                record_of(request).api_key = key
                return
    raise Unauthorized(
        "missing or invalid API key (Authorization: Bearer <key>)",
        headers={"WWW-Authenticate": "Bearer"},
    )
