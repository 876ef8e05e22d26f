"""An OpenAI-shaped server on loopback that fails a share of calls on purpose.

Used by benchmarks/resilience.py. ``/v1/completions`` (the decomposer) always
answers with a fixed two-step plan; ``/v1/chat/completions`` (the solver)
fails ``--fail-rate`` of calls with a mix of faults: 429 with Retry-After,
500, 503, a stall past the client's timeout, a dropped connection, malformed
JSON and a response without usage (the last two are not retryable, or not a
failure at all, so they show what a client sees for each).

    python benchmarks/flaky_solver.py --port 8101 --fail-rate 0.2 --seed 7
"""

from __future__ import annotations

import argparse
import asyncio
import random

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

FAULTS = ("429", "500", "503", "stall", "reset", "badjson", "nousage")
PLAN = "1. How many apples does Tom have?\n2. How many apples does he have in total?"


class _Dropped(Response):
    """Promise 1000 bytes, send 6, end: the server closes the connection mid-body."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"1000")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"choi', "more_body": False})


def build(fail_rate: float, seed: int, stall_s: float, delay_s: float) -> Starlette:
    rng = random.Random(seed)
    counts: dict[str, int] = {}

    async def completions(request: Request) -> Response:
        await request.body()
        return JSONResponse(
            {
                "choices": [{"text": PLAN, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 120, "completion_tokens": 24},
            }
        )

    async def chat(request: Request) -> Response:
        await request.body()
        fault = rng.choice(FAULTS) if rng.random() < fail_rate else "ok"
        counts[fault] = counts.get(fault, 0) + 1
        await asyncio.sleep(delay_s)
        ok = {
            "choices": [{"message": {"content": "The answer is 7."}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 80, "completion_tokens": 8},
        }
        if fault == "ok":
            return JSONResponse(ok)
        if fault == "429":
            return JSONResponse({"error": "rate limited"}, 429, {"Retry-After": "0"})
        if fault in ("500", "503"):
            return JSONResponse({"error": "upstream"}, int(fault))
        if fault == "stall":
            await asyncio.sleep(stall_s)
            return JSONResponse(ok)
        if fault == "reset":
            return _Dropped()
        if fault == "badjson":
            return Response(b"{not json", media_type="application/json")
        del ok["usage"]  # nousage
        return JSONResponse(ok)

    async def stats(request: Request) -> Response:
        return JSONResponse(counts)

    return Starlette(
        routes=[
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/stats", stats),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fail-rate", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--stall-s", type=float, default=3.0)
    parser.add_argument("--delay-s", type=float, default=0.02)
    args = parser.parse_args()
    app = build(args.fail_rate, args.seed, args.stall_s, args.delay_s)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="error", backlog=4096)


if __name__ == "__main__":
    main()
