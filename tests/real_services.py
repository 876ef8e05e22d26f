"""Real backing services for the slow tier: a ``redis-server`` of our own.

Debian's ``redis-server`` (scripts/system-packages.txt) runs on a Unix socket
in a temporary directory, so no TCP port is picked and nothing outside the
test session can reach it: no persistence, no port, gone at the end.

``redis_url`` (session scope) is its URL (``unix:///.../redis.sock``), for
any test that needs a real Redis (per-key limits, the shared cache). Tests
that share it keep to their own key prefix (or call FLUSHALL themselves).
A missing ``redis-server`` is a failure: the project's set-up installs it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from service.cli import procs

# Fixtures that start a real service: a test that uses one is marked slow (conftest).
REAL_SERVICES = frozenset({"redis_url"})


def _answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=1.0)
    try:
        return bool(client.ping())
    except redis.exceptions.ConnectionError:
        return False
    finally:
        client.close()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed: run scripts/install.sh (Debian: redis-server)"
    with tempfile.TemporaryDirectory(prefix="divconq-redis-") as tmp:
        sock = Path(tmp) / "redis.sock"
        log = Path(tmp) / "redis.log"
        args = [
            binary,
            "--port", "0",  # no TCP: the Unix socket only
            "--unixsocket", str(sock),
            "--unixsocketperm", "700",
            "--save", "",
            "--appendonly", "no",
            "--dir", tmp,
            "--logfile", str(log),
        ]  # fmt: skip
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        url = f"unix://{sock}"
        try:
            procs.wait_until(
                lambda: sock.exists() and _answers(url),
                timeout_s=30,
                what="redis-server",
                proc=proc,
                log=log,
            )
            yield url
        finally:
            procs.stop(proc)
