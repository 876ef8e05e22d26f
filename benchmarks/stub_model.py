"""A lean OpenAI-shaped model stub on loopback that answers after a fixed delay.

Used by the overhead, modes and cold-start benchmarks in place of real
models, so that only the service's own work is measured. ``/v1/completions``
(the decomposer) answers with ``--plan``; ``/v1/chat/completions`` (the
solver) with a short answer; both after their delay and with usage. A chat
request with ``"stream": true`` gets the same answer as server-sent events
(role, content, finish, usage, ``[DONE]``), as OpenAI's API sends it, since
the service streams its final solver call.
``GET /stats`` gives the call counts and the most calls in flight at once.
``POST /v1/traces`` is an OTLP/HTTP trace sink (answers at once, counts the
batches and bytes) for the overhead benchmark's tracing-on service.

It is a bare asyncio (uvloop) HTTP/1.1 server with keep-alive, not a web
framework: on a 2-core box its CPU would otherwise be charged to the
service under test.

``--precise-timers``: the delays end within tens of microseconds of their
time rather than up to a millisecond late. uvloop (libuv) and asyncio's
default epoll selector both wait in whole milliseconds, so each delay ends
somewhere in the millisecond after it is due, at a phase that shifts with
the service's own timing; a side-by-side comparison of configurations a
fraction of a millisecond apart then measures that phase as much as the
service. This mode runs asyncio over ``select()``, whose timeout has
microsecond resolution: fine for the one-client loops that use it, slower
than uvloop under many connections.

    python benchmarks/stub_model.py --port 8101 --delay-s 0.2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import selectors
from collections.abc import Callable, Coroutine
from typing import Any

CHAT_USAGE = {"prompt_tokens": 80, "completion_tokens": 8}
PLAN_USAGE = {"prompt_tokens": 120, "completion_tokens": 24}
# An empty ExportTraceServiceResponse: everything accepted.
TRACES_OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n"


def _response(status: str, body: dict[str, object]) -> bytes:
    raw = json.dumps(body).encode()
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(raw)}\r\n\r\n".encode()
        + raw
    )


def _sse(events: list[dict[str, object]]) -> bytes:
    raw = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    raw += b"data: [DONE]\n\n"
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        + f"content-length: {len(raw)}\r\n\r\n".encode()
        + raw
    )


class Stub:
    def __init__(self, delay_s: float, decomposer_delay_s: float, plan: str) -> None:
        self.delay_s = delay_s
        self.decomposer_delay_s = decomposer_delay_s
        self.counts = {"completions": 0, "chat": 0, "trace_batches": 0, "trace_bytes": 0}
        self.active = 0
        self.max_active = 0
        self.chat = _response(
            "200 OK",
            {
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "The answer is 7."},
                        "finish_reason": "stop",
                    }
                ],
                "usage": CHAT_USAGE,
            },
        )
        chunk = {"object": "chat.completion.chunk"}
        self.chat_stream = _sse(
            [
                {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant"}}]},
                {**chunk, "choices": [{"index": 0, "delta": {"content": "The answer is 7."}}]},
                {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
                {**chunk, "choices": [], "usage": CHAT_USAGE},
            ]
        )
        self.plan = _response(
            "200 OK",
            {"choices": [{"index": 0, "text": plan, "finish_reason": "stop"}], "usage": PLAN_USAGE},
        )

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                _, path, _ = lines[0].split(b" ", 2)
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length) if length else b""
                if path.endswith(b"/v1/traces"):
                    self.counts["trace_batches"] += 1
                    self.counts["trace_bytes"] += len(body)
                    writer.write(TRACES_OK)
                    continue
                writer.write(
                    await self.answer(
                        path, streamed=b'"stream": true' in body or b'"stream":true' in body
                    )
                )
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def answer(self, path: bytes, *, streamed: bool = False) -> bytes:
        if path.endswith(b"/stats"):
            return _response("200 OK", {"counts": self.counts, "max_in_flight": self.max_active})
        chat = path.endswith(b"/chat/completions")
        if not chat and not path.endswith(b"/completions"):
            return _response("404 Not Found", {"error": "not found"})
        self.counts["chat" if chat else "completions"] += 1
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await asyncio.sleep(self.delay_s if chat else self.decomposer_delay_s)
        finally:
            self.active -= 1
        if chat:
            return self.chat_stream if streamed else self.chat
        return self.plan


async def serve(port: int, stub: Stub) -> None:
    server = await asyncio.start_server(stub.handle, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-s", type=float, default=0.2, help="solver answer delay")
    parser.add_argument("--decomposer-delay-s", type=float, default=None, help="default: --delay-s")
    parser.add_argument("--plan", default="1. How many apples does Tom have?")
    parser.add_argument(
        "--precise-timers", action="store_true", help="delays to the microsecond (select())"
    )
    args = parser.parse_args()
    dd = args.delay_s if args.decomposer_delay_s is None else args.decomposer_delay_s
    stub = Stub(args.delay_s, dd, args.plan)
    if args.precise_timers:
        loop_factory = lambda: asyncio.SelectorEventLoop(selectors.SelectSelector())  # noqa: E731
        with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=loop_factory) as r:
            r.run(serve(args.port, stub))
        return
    runner: Callable[[Coroutine[Any, Any, None]], None]
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvicorn[standard] brings uvloop
        runner = asyncio.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(serve(args.port, stub))


if __name__ == "__main__":
    main()
