"""Idle keep-alive connections stay open longer than a load balancer keeps them.

A balancer (AWS ALB, nginx ingress: 60 s idle) reuses its upstream
connections; a server that closes one first races the balancer's next request
on it, which the balancer answers 502. The client here is a raw socket, so
nothing reconnects behind the test's back the way an HTTP client's pool does.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from service.core.settings import Settings
from tests.fakes import settings_for
from tests.support import live_app, refused_port, serve_process, wait_ready

REQUEST = b"GET /healthz HTTP/1.1\r\nHost: divconq\r\n\r\n"


def _ask(sock: socket.socket) -> bytes:
    """Send one request on ``sock``; the response (b"" if the server closed it)."""
    sock.sendall(REQUEST)
    data = b""
    while b"\r\n\r\n" not in data or not data.endswith(b'{"status":"ok"}'):
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk
    return data


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def test_the_default_outlasts_common_balancers_idle_timeouts() -> None:
    assert Settings().keep_alive_s > 60  # AWS ALB and nginx ingress close idle ones at 60 s


def test_the_setting_reaches_the_server() -> None:
    """keep_alive_s=1: the server closes the idle connection (the default would keep
    it 75 s; the socket's 10 s timeout fails the test first)."""
    # An HTTP decomposer nobody answers: /healthz needs no model (no engine starts).
    decomposer = {"backend": "openai", "base_url": "http://decomposer.test/v1"}
    settings = settings_for(keep_alive_s=1, decomposer=decomposer)
    with live_app(settings) as url, _connect(url) as sock:
        assert _ask(sock).startswith(b"HTTP/1.1 200")
        assert sock.recv(4096) == b""  # waits until the server closes it


@pytest.mark.slow
def test_a_connection_reused_after_30_s_idle_gets_its_answer(tmp_path: Path) -> None:
    """``divconq serve`` as deployed (no model needed for /healthz): 30 s real time."""
    with refused_port() as nowhere:
        env = {
            "DIVCONQ_DECOMPOSER__BACKEND": "openai",
            "DIVCONQ_DECOMPOSER__BASE_URL": f"http://127.0.0.1:{nowhere}/v1",
            "DIVCONQ_SOLVER__BACKEND": "openai",
            "DIVCONQ_SOLVER__BASE_URL": f"http://127.0.0.1:{nowhere}/v1",
            "DIVCONQ_SOLVER__MODEL": "m",
        }
        service = serve_process(env, tmp_path / "serve.log")
        try:
            wait_ready(service, "divconq serve", timeout_s=120, path="/healthz")
            with _connect(service.url) as sock:
                assert _ask(sock).startswith(b"HTTP/1.1 200")
                time.sleep(30)
                assert _ask(sock).startswith(b"HTTP/1.1 200")
        finally:
            service.stop()
