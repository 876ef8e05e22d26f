"""Run a request's work under its deadline, and cancel it if the client leaves.

Starlette does not cancel a handler when the client disconnects, so a
generation nobody waits for would run to its token cap. Here the work runs
as a task, a watcher waits for ``http.disconnect``, and cancelling the task
makes the engine abort its generation (see ``EmbeddedEngine.generate``). The
handler then raises ``ClientDisconnected``: the request is recorded as 499,
quietly, never as a server error with a traceback.

``watch_disconnect`` is the one watcher: handlers use it through
``cancel_on_disconnect``/``run_request``, and the streaming response
(``service/api/streaming.py``) uses it directly.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.types import Receive

from service.core.deadline import deadline_scope
from service.core.errors import ClientDisconnected, DeadlineExceeded

T = TypeVar("T")


@contextlib.asynccontextmanager
async def watch_disconnect(
    receive: Receive, task: asyncio.Task[Any]
) -> AsyncIterator[asyncio.Event]:
    """While the block runs, cancel ``task`` when the client disconnects.

    Yields an event that is set once the client has gone. The request body
    has been read already, so the next message the server sends is the
    disconnect.
    """
    left = asyncio.Event()

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        left.set()
        task.cancel()

    watcher = asyncio.create_task(watch())
    try:
        yield left
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watcher


async def cancel_on_disconnect(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """``work``'s result; ``ClientDisconnected`` (499) if the client left first."""
    task = asyncio.ensure_future(work)
    try:
        async with watch_disconnect(request.receive, task) as left:
            try:
                return await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if not left.is_set() or (current is not None and current.cancelling()):
                    raise
                raise ClientDisconnected("the client closed the connection") from None
    finally:
        task.cancel()


async def within_deadline(work: Coroutine[Any, Any, T], timeout_s: float) -> T:
    """``work`` within the request's deadline: ``DeadlineExceeded`` (504) past it.

    The deadline is also published (``service.core.deadline``) so that retries and
    HTTP timeouts below never plan past it.
    """
    with deadline_scope(timeout_s):
        try:
            async with asyncio.timeout(timeout_s):
                return await work
        except TimeoutError:
            raise DeadlineExceeded(timeout_s) from None


async def run_request(request: Request, work: Coroutine[Any, Any, T], timeout_s: float) -> T:
    """``work`` within the request's deadline (504 past it), cancelled on disconnect."""
    return await within_deadline(cancel_on_disconnect(request, work), timeout_s)
