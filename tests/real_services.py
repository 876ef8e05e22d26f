"""Real backing services for the slow tier: a ``redis-server`` and a PostgreSQL of our own.

Debian's ``redis-server`` (scripts/system-packages.txt) runs on a Unix socket
in a temporary directory, so no TCP port is picked and nothing outside the
test session can reach it: no persistence, no port, gone at the end.

``redis_url`` (session scope) is its URL (``unix:///.../redis.sock``), for
any test that needs a real Redis (per-key limits, the shared cache). Tests
that share it keep to their own key prefix (or call FLUSHALL themselves).
A missing ``redis-server`` is a failure: the project's set-up installs it.

``postgres_url`` (session scope) is a PostgreSQL server of Debian's
``postgresql`` package, initialised in a temporary directory and listening on
a Unix socket there only (no TCP port); ``initdb`` refuses to run as root, so
as root the server runs as the ``postgres`` user the package creates. Tests
that share it use databases of their own (``fresh_database``).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.cli import procs

# Fixtures that start a real service: a test that uses one is marked slow (conftest).
REAL_SERVICES = frozenset({"redis_url", "postgres_url"})


def _answers(url: str) -> bool:
    import redis  # here: conftest imports this module in every pytest process

    client = redis.Redis.from_url(url, socket_timeout=1.0)
    try:
        return bool(client.ping())
    except redis.exceptions.ConnectionError:
        return False
    finally:
        client.close()


@contextlib.contextmanager
def redis_server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A ``redis-server`` of its own on a Unix socket: its URL and its process
    (a test that stops it uses its own, not the session's)."""
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
            yield url, proc
        finally:
            procs.stop(proc)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with redis_server() as (url, _):
        yield url


def _pg_binary(name: str) -> str:
    """Debian keeps the server's programs in /usr/lib/postgresql/<version>/bin, off PATH."""
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    assert found, f"{name} is not installed: run scripts/install.sh (Debian: postgresql)"
    return found


def _as_postgres(args: list[str]) -> list[str]:
    """``args`` as the ``postgres`` user when we are root (initdb refuses root)."""
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def _pg_answers(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server's URL (database ``postgres``, user ``postgres``, Unix socket)."""
    initdb, postgres = _pg_binary("initdb"), _pg_binary("postgres")
    with tempfile.TemporaryDirectory(prefix="divconq-pg-") as tmp:
        root = Path(tmp)
        data, log = root / "data", root / "postgres.log"
        if os.geteuid() == 0:
            shutil.chown(root, "postgres")
        subprocess.run(
            _as_postgres([initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]),
            check=True,
            capture_output=True,
        )
        args = [
            postgres, "-D", str(data),
            "-k", tmp,  # the socket's directory
            "-c", "listen_addresses=",  # no TCP
            "-c", "fsync=off",  # a throwaway server: durability is not under test here
        ]  # fmt: skip
        with log.open("wb") as out:
            proc = subprocess.Popen(_as_postgres(args), stdout=out, stderr=subprocess.STDOUT)
        url = f"postgresql://postgres@/postgres?host={tmp}"
        try:
            procs.wait_until(
                lambda: _pg_answers(url), timeout_s=60, what="postgres", proc=proc, log=log
            )
            yield url
        finally:
            procs.stop(proc)


def fresh_database(postgres_url: str) -> str:
    """A new, empty database on the server: its URL."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return postgres_url.replace("/postgres?", f"/{name}?")
