"""What makes two requests the same: the cache key and the request's cache policy.

A key is the SHA-256 of canonical JSON of everything that changes the
answer, under a namespace (the API key's name, unless the cache is shared):
two tenants never share an entry, so one cannot time another's questions.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

# Bump when what an entry holds changes shape: old entries are then never read.
KEY_VERSION = 1


@dataclass(frozen=True)
class CachePolicy:
    """One request's use of the cache.

    ``read``: look entries up (off with ``"cache": false`` or ``Cache-Control:
    no-cache``); ``write``: store answers (off with ``"cache": false`` or
    ``no-store``); ``force``: cache even at a temperature above 0 (``"cache":
    true``); ``namespace``: whose entries these are.
    """

    namespace: str = "anonymous"
    read: bool = True
    write: bool = True
    force: bool = False

    @property
    def used(self) -> bool:
        return self.read or self.write

    @classmethod
    def of(cls, namespace: str, asked: bool | None, cache_control: str) -> CachePolicy:
        """The policy from the body's ``cache`` field and the ``Cache-Control`` header."""
        directives = {d.strip().lower() for d in cache_control.split(",")}
        return cls(
            namespace=namespace,
            read=asked is not False and "no-cache" not in directives,
            write=asked is not False and "no-store" not in directives,
            force=asked is True,
        )


OFF = CachePolicy(read=False, write=False)


def cache_key(kind: str, namespace: str, parts: Any) -> str:
    """``divconq:cache:v1:<kind>:<sha256>``; ``parts`` must be JSON-serialisable."""
    canonical = json.dumps(
        [KEY_VERSION, namespace, parts], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return f"divconq:cache:v{KEY_VERSION}:{kind}:{digest}"
