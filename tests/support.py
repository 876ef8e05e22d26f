"""Test helpers: processes and live servers (on ``service.cli.procs``), and a fault server."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from service.cli import procs
from service.cli.procs import bound_socket, free_port, refused_port, url_of
from service.core.settings import Settings
from tests.scripted_solver import ANTHROPIC_REPLY

__all__ = [
    "FaultServer",
    "Proc",
    "bound_socket",
    "free_port",
    "live_app",
    "refused_port",
    "refused_start",
    "serve_process",
    "service_cli",
    "start_process",
    "wait_ready",
    "wait_until",
]


@dataclass
class Proc:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        procs.stop(self.proc)


# ``service.cli.procs.wait_until`` where an HTTP transport error means "not yet".
wait_until = functools.partial(procs.wait_until, transient=(httpx.TransportError, OSError))


def wait_ready(service: Proc, what: str, timeout_s: float = 600, path: str = "/readyz") -> None:
    """Until ``service`` answers ``path`` with 200; fails with its log's tail if it exits."""
    wait_until(
        lambda: httpx.get(f"{service.url}{path}").status_code == 200,
        timeout_s=timeout_s,
        what=what,
        proc=service.proc,
        log=service.log,
    )


def start_process(
    args: list[str], env: dict[str, str], log: Path, url: str, pass_fds: tuple[int, ...] = ()
) -> Proc:
    full_env = {**os.environ, **env}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            args, env=full_env, stdout=out, stderr=subprocess.STDOUT, pass_fds=pass_fds
        )
    return Proc(url=url, proc=proc, log=log)


def serve_process(env: dict[str, str], log: Path) -> Proc:
    """``python -m service serve`` on a loopback socket bound here and handed over
    (``--fd``): no other process can take its port meanwhile."""
    with bound_socket() as sock:
        args = [sys.executable, "-m", "service", "serve", "--fd", str(sock.fileno())]
        return start_process(args, env, log, url_of(sock), pass_fds=(sock.fileno(),))


def service_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """``python -m service ARGS``; fails the test with the tail of stderr if it fails."""
    proc = subprocess.run(
        [sys.executable, "-m", "service", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "DIVCONQ_LOG_LEVEL": "info", **(env or {})},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def refused_start(env: dict[str, str], timeout: float = 120) -> str:
    """``python -m service serve`` with ``env`` over this environment, which must refuse
    to start: a failed exit and one line on stderr, no traceback. That line."""
    proc = subprocess.run(
        [sys.executable, "-m", "service", "serve"],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@contextlib.contextmanager
def live_app(settings: Settings) -> Iterator[str]:
    """The real app under uvicorn on a loopback port, in a thread."""
    # Imported here: conftest imports this module, and xdist's controller process,
    # which runs no test, need not import the app before it starts the workers.
    from service.api.app import create_app

    sock = bound_socket()
    settings = settings.model_copy(update={"host": "127.0.0.1", "port": sock.getsockname()[1]})
    with procs.serve_in_thread(
        create_app(settings), sock, keep_alive_s=settings.keep_alive_s
    ) as url:
        wait_until(
            lambda: httpx.get(f"{url}/healthz").status_code == 200,
            timeout_s=30,
            what="app",
            interval_s=0.02,
        )
        yield url


class FaultServer:
    """A scripted model server for what a real one won't do on demand.

    ``script`` is the behaviour of each successive request (the last one
    repeats): ok, slow, stall, 400, 429, 500, 503, reset, badjson, nousage,
    echo401, anthropic, "say:<text>" (a chat answer with that text), or
    "plan:<text>" (an OpenAI /completions answer with that text, for a scripted
    decomposer). It records every request's headers
    and JSON body, and the most requests it had in flight at once.
    """

    PROMPT_TOKENS = 11

    def __init__(self, *script: str, stall_s: float = 5.0, retry_after: str = "0") -> None:
        self.script = list(script) or ["ok"]
        self.retry_after = retry_after
        self.hits = 0
        self.headers: list[dict[str, str]] = []
        self.bodies: list[dict[str, object]] = []
        self.paths: list[str] = []
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _send(
                self, status: int, body: bytes, headers: dict[str, str] | None = None
            ) -> None:
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(body)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up first: that is the point of a stall

            def do_POST(self) -> None:
                with outer._lock:
                    behaviour = outer.script[min(outer.hits, len(outer.script) - 1)]
                    outer.hits += 1
                    outer.active += 1
                    outer.max_active = max(outer.max_active, outer.active)
                    outer.headers.append({k.lower(): v for k, v in self.headers.items()})
                    outer.paths.append(self.path)
                try:
                    raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                    outer.bodies.append(json.loads(raw or b"{}"))
                    self._behave(behaviour)
                finally:
                    with outer._lock:
                        outer.active -= 1

            def _behave(self, behaviour: str) -> None:
                ok: dict[str, Any] = {
                    "choices": [
                        {"message": {"content": "The answer is 7."}, "finish_reason": "stop"}
                    ],
                    "usage": {"prompt_tokens": outer.PROMPT_TOKENS, "completion_tokens": 5},
                }
                if behaviour == "slow":
                    time.sleep(stall_s)
                if behaviour in ("ok", "slow"):
                    self._send(200, json.dumps(ok).encode())
                elif behaviour.startswith("say:"):
                    ok["choices"][0]["message"]["content"] = behaviour.removeprefix("say:")
                    self._send(200, json.dumps(ok).encode())
                elif behaviour == "nousage":
                    del ok["usage"]
                    self._send(200, json.dumps(ok).encode())
                elif behaviour.startswith("plan:"):
                    text = behaviour.removeprefix("plan:")
                    body = {
                        "choices": [{"text": text, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 50, "completion_tokens": 20},
                    }
                    self._send(200, json.dumps(body).encode())
                elif behaviour == "anthropic":
                    self._send(200, json.dumps(ANTHROPIC_REPLY).encode())
                elif behaviour == "stall":
                    time.sleep(stall_s)
                    self._send(200, b'{"choices": []}')
                elif behaviour in ("400", "500", "503"):
                    self._send(int(behaviour), json.dumps({"error": behaviour}).encode())
                elif behaviour == "429":
                    self._send(429, b'{"error": "slow down"}', {"Retry-After": outer.retry_after})
                elif behaviour == "reset":
                    # Close the socket without an answer (RST): a dropped connection.
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.close_connection = True
                    self.connection.close()
                elif behaviour == "badjson":
                    self._send(200, b"{not json")
                elif behaviour == "echo401":
                    # Like servers that quote the key they rejected.
                    auth = self.headers.get("authorization", "")
                    self._send(401, json.dumps({"error": f"invalid key {auth}"}).encode())
                else:
                    raise AssertionError(behaviour)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        # A short poll: shutdown() waits up to one poll interval (0.5 s by default).
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> FaultServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
