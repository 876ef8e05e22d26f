"""A crash of the API process takes its engine with it (issue 35, item 3).

`divconq serve` on the embedded default, ready; then ``kill -9`` of the API
process. Within 10 s no process of that service is left, and its port takes a
new server. Before, the forked engine core lived on with PPID 1, holding
gigabytes and the listening socket (clients hung; a restart failed with
"address already in use"). Nor does the core hold a connection the API
process had accepted when it forked (a readiness probe in flight): the port
stayed busy while the core exited. The mechanism is tested without vLLM in
tests/test_engine_process.py; the start-after-start figures are
benchmarks/engine_starts.py's.
"""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.stacks import STARTUP_TIMEOUT_S
from tests.support import serve_process, wait_ready, wait_until

pytestmark = pytest.mark.slow


def _alive(pids: list[int]) -> list[int]:
    left = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                left.append(pid)
        except psutil.NoSuchProcess:
            pass
    return left


def _on_port(conns: list[Any], port: int) -> list[Any]:
    """The TCP sockets among ``conns`` (psutil's) whose local port is ``port``."""
    return [c for c in conns if c.laddr and c.laddr.port == port]


def test_kill_9_of_the_api_process_leaves_no_engine_and_frees_the_port(
    model_dir: Path, tmp_path: Path
) -> None:
    env = {
        "DIVCONQ_DATA_DIR": str(model_dir.parent.parent),
        "DIVCONQ_DECOMPOSER__BASE_ENGINE": "off",
    }
    service = serve_process(env, tmp_path / "serve.log")
    pids: list[int] = []
    try:
        wait_ready(service, "serve on the embedded default", STARTUP_TIMEOUT_S)
        children = psutil.Process(service.proc.pid).children(recursive=True)
        pids = [p.pid for p in children]
        assert pids, "the engine core runs in a process of its own"
        host, port = service.url.removeprefix("http://").rsplit(":", 1)
        # Nor a connection the API process had accepted when the core forked
        # (a readiness probe in flight): the core would hold it open.
        assert not [c for p in children for c in _on_port(p.net_connections("tcp"), int(port))]
        os.kill(service.proc.pid, signal.SIGKILL)
        service.proc.wait(timeout=10)
        # At once, while the engine may still be shutting down: refused, not
        # accepted into a backlog that nobody serves (a client would hang).
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host, int(port)), timeout=5).close()
        # 10 s is the target, not a guess at this machine's speed.
        wait_until(lambda: not _alive(pids), timeout_s=10, what="the engine to exit")
        with socket.socket() as again:
            again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                again.bind((host, int(port)))
            except OSError as exc:  # "address already in use": say by what
                held = _on_port(psutil.net_connections("tcp"), int(port))
                pytest.fail(f"{exc}; sockets on port {port}: {held}")
            again.listen()
    finally:
        service.stop()
        for pid in _alive(pids):
            os.kill(pid, signal.SIGKILL)
