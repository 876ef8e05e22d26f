"""Server-sent events: a response that runs the request's work and streams what it emits.

``EventStream`` is a pure-ASGI response. It sends the headers at once, runs
the work as a task and writes each event the work emits as it comes. The
request's disconnect watcher (``service/api/disconnect.py``) waits for
``http.disconnect``: a client that leaves cancels the work (the engine aborts
its generation, solver calls are cancelled) and the request is recorded as
499. A failure after the headers went out cannot change the status line: it is
sent as an error event, and the status it would have had is what the metrics
and the access log record (the request record's ``status``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from service.api.disconnect import watch_disconnect
from service.api.request_record import record
from service.core.errors import ClientDisconnected, ServiceError

log = logging.getLogger(__name__)

# Emits one encoded event (``sse(...)``); the stream writes it as it comes.
Emit = Callable[[bytes], None]
# The work: emits its events; a ServiceError it raises becomes the error event.
Work = Callable[[Emit], Awaitable[None]]

HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    # Proxies (nginx) must pass each event on at once, not buffer the stream.
    (b"x-accel-buffering", b"no"),
]
_END = b""
# How long an event waits for the work to move on before it is written.
WRITE_DELAY_S = 0.002


def sse(event: str | None, data: str) -> bytes:
    """One server-sent event; ``data`` is one line of JSON."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {data}\n\n".encode()


class EventStream(Response):
    """A response streaming ``work``'s events as ``text/event-stream``.

    ``error`` encodes the event for a failure; ``close`` the last event,
    sent after the work ended, failed or not (not when the client left).
    """

    def __init__(
        self,
        work: Work,
        *,
        error: Callable[[ServiceError], bytes],
        close: Callable[[], bytes],
    ) -> None:
        super().__init__(media_type="text/event-stream")
        self._work = work
        self._error = error
        self._close = close

    async def _produce(self, scope: Scope, emit: Emit) -> int:
        """Run the work; the status to record for it."""
        status = 200
        try:
            await self._work(emit)
        except ServiceError as exc:
            status = exc.status_code
            if status >= 500:
                log.warning("streamed request failed: %s", exc.message, extra={"status": status})
            emit(self._error(exc))
        except Exception:
            rid = record(scope).request_id
            log.exception("unhandled error in a stream", extra={"request_id": rid})
            status = 500
            emit(
                self._error(ServiceError(f"internal error; see the service log for request {rid}"))
            )
        emit(self._close())
        return status

    @staticmethod
    async def _next(queue: asyncio.Queue[bytes], finished: asyncio.Event) -> bytes:
        """The events ready to write, as one chunk; ``_END`` when the work is over.

        An event is written ``WRITE_DELAY_S`` after it was emitted, with any
        emitted meanwhile: by then the work has started its next model call, so
        writing (a syscall that wakes the client, which on a small box may take
        the CPU) happens while it waits on a model, never between its calls.
        The last events (the work is over) go out at once.
        """
        chunk = await queue.get()
        if chunk is _END:
            return chunk
        if not finished.is_set():
            await asyncio.sleep(WRITE_DELAY_S)
        while not queue.empty():
            more = queue.get_nowait()
            if more is _END:
                queue.put_nowait(more)  # written next time round
                break
            chunk += more
        return chunk

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        finished = asyncio.Event()

        async def produce() -> int:
            try:
                return await self._produce(scope, queue.put_nowait)
            finally:
                queue.put_nowait(_END)
                finished.set()

        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        task = asyncio.create_task(produce())
        status = ClientDisconnected.status_code
        try:
            async with watch_disconnect(receive, task) as left:
                while (chunk := await self._next(queue, finished)) is not _END:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if not left.is_set():
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                    status = await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the server is shutting down, not the client leaving
        finally:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        record(scope).status = status
