"""Cancel a request's work when its client goes away.

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
