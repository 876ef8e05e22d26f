"""Local processes and ports: the one helper the CLI, the tests and the benchmarks share.

- ``free_port()``: a loopback port nothing listens on (now).
- ``wait_until(check, ...)``: poll until ``check()`` is true, failing early
  when a watched process exits, with the tail of its log in the error.
- ``stop(proc)``: terminate, then kill if it does not exit in time.
- ``serve_in_thread(app, port)``: an ASGI app under uvicorn in this process.
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
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
def serve_in_thread(app: Any, port: int, host: str = "127.0.0.1") -> Iterator[str]:
    """``app`` under uvicorn in a daemon thread; yields its URL.

    On exit the server stops and its lifespan shutdown (the engine's, the
    HTTP client's) runs to completion before this returns.
    """
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level="warning", ws="none")
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
