"""Local processes and ports: the one helper the CLI, the tests and the benchmarks share.

- ``bound_socket()``: a TCP socket bound to a port the kernel picks, held
  until the server that uses it takes it over (never "find a free port, close
  it, hope nobody takes it": parallel test workers did);
- ``refused_port()``: a port held without listening, so connections to it are
  refused for as long as the block runs;
- ``free_port()``: only for third-party servers that must be given a port
  number (``vllm serve``, Prometheus); racy, so never used for our own;
- ``wait_until(check, ...)``: poll until ``check()`` is true, failing early
  when a watched process exits, with the tail of its log in the error.
- ``stop(proc)``: terminate, then kill if it does not exit in time.
- ``serve_in_thread(app, sock)``: an ASGI app under uvicorn in this process.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def bound_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A TCP socket bound to ``host:port`` (0: any free port), not yet listening."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    if port:
        # As uvicorn does: a restart need not wait for the old connections'
        # TIME_WAIT. Not for port 0: the kernel's pick must be a port no other
        # socket holds (refused_port's is bound without listening).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port that refuses connections while the block runs (bound, not listening)."""
    with bound_socket() as sock:
        yield int(sock.getsockname()[1])


def free_port() -> int:
    """A port nothing listens on now, for servers that only take a number (racy)."""
    with bound_socket() as sock:
        return int(sock.getsockname()[1])


def _tail(log: Path | None) -> str:
    if log is None:
        return ""
    with contextlib.suppress(OSError):
        return "\n" + log.read_text(errors="replace")[-4000:]
    return ""


def wait_until(
    check: Callable[[], bool],
    *,
    timeout_s: float,
    what: str,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
    interval_s: float = 0.1,
    transient: tuple[type[BaseException], ...] = (OSError,),
) -> None:
    """Poll ``check`` until it returns true; ``transient`` errors count as "not yet".

    Raises ``RuntimeError`` if ``proc`` exits first and ``TimeoutError`` after
    ``timeout_s``, both naming ``what`` and quoting the end of ``log``.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}{_tail(log)}")
        with contextlib.suppress(*transient):
            if check():
                return
        time.sleep(interval_s)
    raise TimeoutError(f"{what} not ready after {timeout_s:.0f}s{_tail(log)}")


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    """Terminate ``proc`` (SIGTERM: a graceful shutdown), then kill it if it hangs."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def serve_in_thread(
    app: Any, sock: socket.socket | None = None, *, keep_alive_s: int = 5
) -> Iterator[str]:
    """``app`` under uvicorn in a daemon thread, on ``sock`` (default: a new
    loopback socket on a free port); yields its URL. ``keep_alive_s``: how long an
    idle connection stays open (``DIVCONQ_KEEP_ALIVE_S`` where settings say).

    On exit the server stops and its lifespan shutdown (the engine's, the
    HTTP client's) runs to completion before this returns.
    """
    import uvicorn

    from service.embedded.engine_process import close_in_forked_children

    sock = sock or bound_socket()
    close_in_forked_children(sock)
    url = url_of(sock)
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", ws="none", timeout_keep_alive=keep_alive_s)
    )
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True
    )
    thread.start()
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()
