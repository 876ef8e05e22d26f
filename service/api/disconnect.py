"""Run a request's work under its deadline, and cancel it if the client leaves.

Starlette does not cancel a handler when the client disconnects, so a
generation nobody waits for would run to its token cap. Here the work runs
as a task, a watcher waits for ``http.disconnect``, and cancelling the task
makes the engine abort its generation (see ``EmbeddedEngine.generate``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any, TypeVar

from starlette.requests import Request

from service.deadline import deadline_scope
from service.errors import DeadlineExceeded

T = TypeVar("T")


async def cancel_on_disconnect(request: Request, work: Coroutine[Any, Any, T]) -> T:
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        # The body has been read already, so the next message is the disconnect.
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                task.cancel()
                return

    watcher = asyncio.create_task(watch())
    try:
        return await task
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


async def run_request(request: Request, work: Coroutine[Any, Any, T], timeout_s: float) -> T:
    """``work`` within the request's deadline (504 past it), cancelled on disconnect.

    The deadline is also published (``service.deadline``) so that retries and
    HTTP timeouts below never plan past it.
    """
    with deadline_scope(timeout_s):
        try:
            async with asyncio.timeout(timeout_s):
                return await cancel_on_disconnect(request, work)
        except TimeoutError:
            raise DeadlineExceeded(timeout_s) from None
