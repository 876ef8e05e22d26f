"""Test helpers: free ports, waiting on HTTP, live servers and fault servers."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import uvicorn

from service.app import create_app
from service.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    check: Callable[[], bool],
    *,
    timeout_s: float,
    what: str,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-4000:] if log else ""
            raise RuntimeError(f"{what}: process exited with {proc.returncode}\n{tail}")
        with contextlib.suppress(httpx.TransportError):
            if check():
                return
        time.sleep(0.5)
    tail = log.read_text()[-4000:] if log else ""
    raise TimeoutError(f"{what} not ready after {timeout_s:.0f}s\n{tail}")


@dataclass
class Proc:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_process(args: list[str], env: dict[str, str], log: Path, url: str) -> Proc:
    full_env = {**os.environ, **env}
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    return Proc(url=url, proc=proc, log=log)


@contextlib.contextmanager
def live_app(settings: Settings) -> Iterator[str]:
    """The real app under uvicorn on a loopback port, in a thread."""
    port = free_port()
    settings = settings.model_copy(update={"host": "127.0.0.1", "port": port})
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", ws="none"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{url}/healthz").status_code == 200, timeout_s=30, what="app")
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


class FaultServer:
    """A scripted OpenAI-shaped server for faults a real one won't produce on demand."""

    PROMPT_TOKENS = 11

    def __init__(self, behaviour: str, stall_s: float = 5.0) -> None:
        self.behaviour = behaviour
        self.hits = 0
        self.headers: list[dict[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                outer.hits += 1
                outer.headers.append({k.lower(): v for k, v in self.headers.items()})
                length = int(self.headers.get("content-length", 0))
                self.rfile.read(length)
                if outer.behaviour == "slow":
                    time.sleep(stall_s)
                if outer.behaviour in ("ok", "slow"):
                    body = json.dumps(
                        {
                            "choices": [
                                {
                                    "message": {"content": "The answer is 7."},
                                    "finish_reason": "stop",
                                }
                            ],
                            "usage": {"prompt_tokens": outer.PROMPT_TOKENS, "completion_tokens": 5},
                        }
                    ).encode()
                    status = 200
                elif outer.behaviour == "echo401":
                    # Like servers that quote the key they rejected.
                    auth = self.headers.get("authorization", "")
                    body, status = json.dumps({"error": f"invalid key {auth}"}).encode(), 401
                elif outer.behaviour == "stall":
                    time.sleep(stall_s)
                    body, status = b'{"choices": []}', 200
                elif outer.behaviour == "500":
                    body, status = json.dumps({"error": "boom"}).encode(), 500
                elif outer.behaviour == "badjson":
                    body, status = b"{not json", 200
                else:
                    raise AssertionError(outer.behaviour)
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up first: that is the point of a stall

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FaultServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
