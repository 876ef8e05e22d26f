"""What a forked engine core keeps of the API process, and how long it lives
(service/embedded/engine_process.py), without vLLM: a plain forked child
stands in for the core. Each case runs in a fresh interpreter, so the at-fork
hooks it registers never reach the test worker's own forks.

The real engine's case (``kill -9`` of `divconq serve`) is in the slow tier:
tests/test_engine_crash.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support import wait_until

ROOT = Path(__file__).resolve().parent.parent


def _python(code: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"  # exited; only waiting for whoever reaps it


@pytest.mark.parametrize("detached", [False, True])
def test_a_forked_child_does_not_hold_the_listening_socket(detached: bool) -> None:
    """``detached``: as uvloop's server does, the socket object gives its
    descriptor up and the server goes on serving on the same number."""
    proc = _python(
        f"""
        import multiprocessing, os, socket
        from service.cli.procs import bound_socket
        from service.embedded.engine_process import close_in_forked_children

        sock = bound_socket()
        sock.listen()
        fd = sock.fileno()
        inode = os.fstat(fd).st_ino
        close_in_forked_children(sock)
        if {detached}:
            sock.detach()

        def child():
            # The number may be reused by then (multiprocessing reopens stdin):
            # the socket is gone when no descriptor here refers to it.
            for name in os.listdir("/proc/self/fd"):
                try:
                    if os.fstat(int(name)).st_ino == inode:
                        os._exit(1)
                except OSError:
                    pass
            os._exit(0)

        p = multiprocessing.get_context("fork").Process(target=child)
        p.start()
        p.join()
        print(p.exitcode, os.fstat(fd).st_ino == inode)
        """
    )
    out, _ = proc.communicate(timeout=60)
    assert out.split() == ["0", "True"]  # gone in the child, still open here


def test_a_connection_accepted_before_the_fork_closes_when_the_parent_closes_it() -> None:
    """A readiness probe in flight while the core forks: the parent answers and
    closes, and the client must see that close, not wait on the child's copy.
    The parent's own client connection (peer, not local, port the service's)
    stays open in the child."""
    proc = _python(
        """
        import multiprocessing, os, socket, time
        from service.cli.procs import bound_socket
        from service.embedded.engine_process import close_in_forked_children

        sock = bound_socket()
        sock.listen()
        close_in_forked_children(sock)
        client = socket.create_connection(sock.getsockname())
        conn, _ = sock.accept()
        kept, dropped = os.fstat(client.fileno()).st_ino, os.fstat(conn.fileno()).st_ino

        def core():
            held = set()
            for name in os.listdir("/proc/self/fd"):
                try:
                    held.add(os.fstat(int(name)).st_ino)
                except OSError:
                    pass
            print("child", kept in held, dropped in held, flush=True)
            time.sleep(60)  # an engine core: alive while the client waits

        p = multiprocessing.get_context("fork").Process(target=core)
        p.start()
        time.sleep(0.5)
        conn.close()
        client.settimeout(10)  # only turns a hang into a failure
        try:
            print("client", client.recv(1) == b"", flush=True)
        except TimeoutError:
            print("client hung", flush=True)
        p.kill()
        """
    )
    out, _ = proc.communicate(timeout=60)
    # The child kept the parent's client socket and let go of the accepted
    # one; the client read end-of-stream while the child still ran.
    assert sorted(out.splitlines()) == ["child True False", "client True"]


def test_a_forked_child_exits_soon_after_its_parent_is_killed() -> None:
    parent = _python(
        """
        import multiprocessing, time
        from service.embedded.engine_process import watch_parent_in_forked_children

        watch_parent_in_forked_children()

        def core():
            while True:  # an engine core: runs until it is told otherwise
                time.sleep(1)

        p = multiprocessing.get_context("fork").Process(target=core)
        p.start()
        print(p.pid, flush=True)
        time.sleep(600)
        """
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    try:
        assert not _gone(child)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        # PARENT_POLL_S (0.5 s), then SIGTERM; 10 s only turns a hang into a failure.
        wait_until(lambda: _gone(child), timeout_s=10, what="the orphaned child to exit")
    finally:
        parent.stdout.close()
        if not _gone(child):
            os.kill(child, signal.SIGKILL)
