"""``python -m service serve`` with ``httpx`` resolved to ``httpx2`` (pydantic's fork).

Used by ``benchmarks/overhead.py --clients httpx2`` to measure a proposed fix
without changing the service: httpcore 1.0.x rescans its whole connection
pool (quadratically) on every request and response, which dominates the
service's CPU once the solver pool holds hundreds of connections
(encode/httpcore#1035); httpx2's pool does the same work in one pass.
"""

from __future__ import annotations

import sys

import httpx2

if __name__ == "__main__":  # vLLM spawns processes that re-import __main__
    httpx2.alias_httpx()  # before anything imports httpx or httpcore
    from service.cli import main

    raise SystemExit(main(sys.argv[1:]))
