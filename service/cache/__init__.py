"""The response cache: exact-match answers for deterministic requests.

Two levels share one store: a solver call (backend, URL, model, messages,
sampling parameters) and a whole ``/solve`` (question, context, mode,
adapter, solver profile and model, caps). ``keys.py`` says what goes into a
key, ``stores.py`` where entries live (in process, or Redis so replicas share
hits), ``cache.py`` ties them to the metrics and the request's policy.
"""

from service.cache.cache import ResponseCache, build_cache
from service.cache.keys import CachePolicy, cache_key
from service.cache.stores import CacheStore, CacheUnavailable, MemoryStore

__all__ = [
    "CachePolicy",
    "CacheStore",
    "CacheUnavailable",
    "MemoryStore",
    "ResponseCache",
    "build_cache",
    "cache_key",
]
