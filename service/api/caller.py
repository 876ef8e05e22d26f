"""Who is asking: the authenticated key's name and whether it may read usage.

The one place the cache's namespace, the ledger's ``key`` column, the access
log, the per-key metrics and the ``/v1/usage`` gate learn the caller.
Authentication (``service.api.auth``) records the key it accepted on the
request record (``RequestRecord.api_key``: an ``ApiKey`` with its name, limits
and ``admin``); without keys configured every caller is ``anonymous``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import Scope

from service.api.request_record import record
from service.core.keys import ApiKey

ANONYMOUS = "anonymous"


def api_key(where: Request | Scope) -> ApiKey | None:
    """The key the request authenticated with (None: no keys configured)."""
    return record(where.scope if isinstance(where, Request) else where).api_key


def key_name(where: Request | Scope) -> str:
    """The accepted API key's name (never its secret), or ``anonymous``."""
    key = api_key(where)
    return key.name if key is not None else ANONYMOUS


def is_admin(request: Request) -> bool:
    """Whether the caller may read every key's usage (``GET /v1/usage``)."""
    key = api_key(request)
    return key is not None and key.admin
