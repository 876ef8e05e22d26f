"""Who is asking: the authenticated key's name and whether it may read usage.

The one place the cache's namespace, the ledger's ``key`` column and the
``/v1/usage`` gate learn the caller. Authentication (``service.api.auth``)
records the key it accepted in ``request.state``; without keys configured
every caller is ``anonymous``.
"""

from __future__ import annotations

from starlette.requests import Request

ANONYMOUS = "anonymous"


def key_name(request: Request) -> str:
    """The accepted API key's name (never its secret), or ``anonymous``."""
    return str(getattr(request.state, "key_name", None) or ANONYMOUS)


def is_admin(request: Request) -> bool:
    """Whether the caller may read every key's usage (``GET /v1/usage``)."""
    return bool(getattr(request.state, "key_admin", False))
