"""How the vLLM engine-core process is started, and tied to the service's life.

On CPU the service forks vLLM's engine core (``hardware.resolve_start_method``:
it starts about 12 s sooner than a spawned one, docs/benchmarks.md section 0).
A fork copies the whole process, so three things are settled here:

- ``in_fresh_thread``: the engine is built, and the core forked, from a new
  thread that has never run an OpenMP region, so the core inherits no thread
  pool whose workers exist only in the parent (the start hang of section 0).
- ``close_in_forked_children(sock)``: the service's listening socket is
  closed in every child forked afterwards. A core that kept it held the port
  after the API process died: clients hung instead of being refused, and a
  restart failed with "address already in use".
- ``watch_parent_in_forked_children()``: every child forked afterwards ends
  within about a second of its parent's death (SIGTERM to itself, so vLLM
  shuts down cleanly, then an exit if that takes too long). A ``kill -9`` of
  the API process left the core running with PPID 1, holding gigabytes.

Not ``prctl(PR_SET_PDEATHSIG)``: it fires when the *thread* that forked
exits, and that thread (``in_fresh_thread``) ends once the engine is built.
A spawned core (GPU, or the ``mp`` executor) starts a fresh interpreter:
Python's descriptors are not inheritable, so it gets no socket either.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import TypeVar, cast

T = TypeVar("T")

# How often a forked child checks that its parent lives, and how long it
# gives its own SIGTERM handler to shut down before it exits regardless.
PARENT_POLL_S = 0.5
SHUTDOWN_GRACE_S = 5.0


async def in_fresh_thread(fn: Callable[[], T], *, name: str) -> T:
    """Run ``fn`` in a new thread of its own and await its result.

    Not ``asyncio.to_thread``: vLLM forks its engine core from the thread
    that builds the engine, and GNU OpenMP, which does not support fork,
    keeps a thread's worker pool in that thread's own state. The executor
    threads of ``to_thread`` run torch work first (merging the distilled
    weights), so a core forked from one inherited a pool whose workers do not
    exist in the child, and waited for them forever in its first parallel
    region (docs/benchmarks.md, section 0). A thread that never ran one has
    no pool to inherit.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, exc: BaseException | None) -> None:
        if future.done():  # the awaiting task was cancelled meanwhile
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(cast(T, result))

    def run() -> None:
        try:
            result = fn()
        except BaseException as exc:  # handed to the awaiting task, which re-raises it
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=run, name=name, daemon=True).start()
    return await future


class _ForkGuard:
    """State the at-fork hooks read: registered once per process, filled as needed."""

    def __init__(self) -> None:
        # (descriptor, inode) of each socket to close: by number, because the
        # socket object may no longer own it (uvloop's create_server detaches
        # the socket it is given and serves on the same descriptor).
        self.sockets: list[tuple[int, int]] = []
        self.watch_parent = False
        self.forking_pid = os.getpid()
        self.registered = False

    def register(self) -> None:
        if not self.registered:
            os.register_at_fork(before=self._before, after_in_child=self._in_child)
            self.registered = True

    def _before(self) -> None:
        # The pid of the process that forks, read in the child: a grandchild
        # watches its own parent, not the API process.
        self.forking_pid = os.getpid()

    def _in_child(self) -> None:
        for fd, inode in self.sockets:
            # Only if the number still names that socket (the parent may have
            # closed it and reused the number since). The parent's copy keeps
            # serving: this closes the child's descriptor, not the socket.
            with contextlib.suppress(OSError):
                if os.fstat(fd).st_ino == inode:
                    os.close(fd)
        self.sockets = []
        if self.watch_parent:
            parent = self.forking_pid
            threading.Thread(
                target=_exit_when_orphaned, args=(parent,), name="parent-watch", daemon=True
            ).start()


def _exit_when_orphaned(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(SHUTDOWN_GRACE_S)
    os._exit(1)


_guard = _ForkGuard()


def close_in_forked_children(sock: socket.socket) -> None:
    """Close ``sock`` in every process this one forks from now on."""
    fd = sock.fileno()
    _guard.sockets.append((fd, os.fstat(fd).st_ino))
    _guard.register()


def watch_parent_in_forked_children() -> None:
    """Every process this one forks from now on exits soon after this one dies."""
    _guard.watch_parent = True
    _guard.register()
