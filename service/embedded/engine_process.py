"""How the vLLM engine-core process is started, and tied to the service's life.

On CPU the service forks vLLM's engine core (``hardware.resolve_start_method``:
it starts about 12 s sooner than a spawned one, docs/benchmarks.md section 0).
A fork copies the whole process, so three things are settled here:

- ``in_fresh_thread``: the engine is built, and the core forked, from a new
  thread that has never run an OpenMP region, so the core inherits no thread
  pool whose workers exist only in the parent (the start hang of section 0).
- ``close_in_forked_children(sock)``: the service's listening socket, and
  every connection it has accepted, is closed in every child forked
  afterwards. A core that kept the listener held the port after the API
  process died: clients hung instead of being refused, and a restart failed
  with "address already in use". A core that kept a connection (a readiness
  probe in flight while the core forked, two starts in three) held it open
  for its whole life: the API process's close never reached the client, and
  a restart's bind could fail on it while the core exited.
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
import stat
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
        # Inodes of the listening sockets to close: found by inode, not through
        # the socket object, which may no longer own its descriptor (uvloop's
        # create_server detaches the socket it is given and serves on the same
        # number). Their TCP ports: the connections they accepted have the same
        # local port, and no other socket of this process can have it.
        self.inodes: set[int] = set()
        self.ports: set[int] = set()
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
        if self.inodes:
            _drop_sockets(self.inodes, self.ports)
        self.inodes, self.ports = set(), set()
        if self.watch_parent:
            parent = self.forking_pid
            threading.Thread(
                target=_exit_when_orphaned, args=(parent,), name="parent-watch", daemon=True
            ).start()


def _served_here(fd: int, inodes: set[int], ports: set[int]) -> bool:
    """Whether ``fd`` is one of the listening sockets or a connection one accepted."""
    st = os.fstat(fd)
    if not stat.S_ISSOCK(st.st_mode):
        return False
    if st.st_ino in inodes:
        return True
    sock = socket.socket(fileno=fd)  # only to ask; detached below, never closed
    try:
        if sock.type != socket.SOCK_STREAM or sock.family not in (
            socket.AF_INET,
            socket.AF_INET6,
        ):
            return False
        return int(sock.getsockname()[1]) in ports
    finally:
        sock.detach()


def _drop_sockets(inodes: set[int], ports: set[int]) -> None:
    """In a forked child: let go of the parent's listening sockets and their connections.

    Each descriptor is pointed at /dev/null rather than closed. The parent's
    copy keeps serving either way (this drops the child's reference, not the
    socket), but a closed number would be reused by the child's next open, and
    an inherited object that still thinks it owns the number (a transport, a
    socket) would close that instead when it is collected.
    """
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:  # not Linux, where alone the engine core is forked
        return
    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        for name in names:
            fd = int(name)
            if fd == null:
                continue
            # The descriptor listdir itself used is closed by now: OSError.
            with contextlib.suppress(OSError, ValueError):
                if _served_here(fd, inodes, ports):
                    os.dup2(null, fd, inheritable=False)
    finally:
        os.close(null)


def _exit_when_orphaned(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(SHUTDOWN_GRACE_S)
    os._exit(1)


_guard = _ForkGuard()


def close_in_forked_children(sock: socket.socket) -> None:
    """Close ``sock``, and the connections it accepts, in each process forked from now on."""
    fd = sock.fileno()
    _guard.inodes.add(os.fstat(fd).st_ino)
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        _guard.ports.add(int(sock.getsockname()[1]))
    _guard.register()


def watch_parent_in_forked_children() -> None:
    """Every process this one forks from now on exits soon after this one dies."""
    _guard.watch_parent = True
    _guard.register()
