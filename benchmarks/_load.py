"""A lean load client for the benchmark scripts (not a benchmark itself).

One HTTP/1.1 keep-alive connection per simulated client, cheap enough not to
starve the service of CPU on a 2-core box (httpx costs several times more per
request), and a closed loop of such clients.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class Result:
    status: int
    seconds: float
    body: dict[str, Any] | None
    started: float = 0.0  # perf_counter() when the request was sent


class KeepAliveClient:
    """One HTTP/1.1 keep-alive connection; POSTs JSON, reads Content-Length bodies."""

    # More request header lines (b"name: value\r\n" each), for subclasses: a key, say.
    extra_headers = b""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self._reader, self._writer

    async def _send(
        self, path: str, payload: bytes
    ) -> tuple[asyncio.StreamReader, int, dict[bytes, bytes]]:
        """POST ``payload``; returns the reader (at the body), the status and the
        headers (names lower-cased)."""
        reader, writer = await self._connect()
        writer.write(
            f"POST {path} HTTP/1.1\r\nhost: {self.host}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(payload)}\r\n".encode()
            + self.extra_headers
            + b"\r\n"
            + payload
        )
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(b":") for line in lines[1:] if line)
        }
        return reader, status, headers

    async def post(self, path: str, payload: bytes) -> tuple[int, bytes]:
        reader, status, headers = await self._send(path, payload)
        length = int(headers.get(b"content-length", b"0"))
        body = await reader.readexactly(length) if length else b""
        if headers.get(b"connection", b"").lower() == b"close":
            self.close()
        return status, body

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


async def closed_loop(
    url: str,
    path: str,
    payloads: Sequence[dict[str, Any]],
    concurrency: int,
    *,
    duration_s: float | None = None,
    total: int | None = None,
    stagger_s: float = 0.0,
    client: Callable[[str, int], KeepAliveClient] = KeepAliveClient,
) -> tuple[list[Result], float]:
    """``concurrency`` clients, each sending its next request when the last returns.

    Runs for ``duration_s`` seconds, or until ``total`` requests were sent.
    ``stagger_s`` spreads the clients' first requests evenly over that many
    seconds; without it every client starts at once, and against a server
    with a fixed answer time they stay in lockstep, arriving as one burst per
    cycle. ``client`` makes each worker's connection (a streaming reader, say).
    Returns every result and the wall time.
    """
    host, port = url.removeprefix("http://").split(":")
    bodies = [json.dumps(p).encode() for p in payloads]
    results: list[Result] = []
    sent = 0
    started = time.perf_counter()
    stop_at = started + duration_s if duration_s is not None else float("inf")

    async def worker(k: int) -> None:
        nonlocal sent
        conn = client(host, int(port))
        await asyncio.sleep(stagger_s * k / concurrency)
        try:
            while time.perf_counter() < stop_at and (total is None or sent < total):
                body = bodies[sent % len(bodies)]
                sent += 1
                t0 = time.perf_counter()
                try:
                    status, raw = await conn.post(path, body)
                except (OSError, asyncio.IncompleteReadError):
                    conn.close()
                    results.append(Result(0, time.perf_counter() - t0, None, t0))
                    continue
                seconds = time.perf_counter() - t0
                parsed = json.loads(raw) if raw else None
                results.append(Result(status, seconds, parsed, t0))
        finally:
            conn.close()

    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return results, time.perf_counter() - started


async def interleaved_loop(
    urls: dict[str, str],
    path: str,
    payloads: Sequence[dict[str, Any]],
    *,
    duration_s: float,
    seed: int = 0,
) -> tuple[dict[str, list[Result]], float]:
    """One client taking turns between services: each step sends the same payload to
    every service, one request at a time, in a shuffled order; for ``duration_s``.

    For comparing configurations of one service: whatever drifts on the machine
    (another process waking, the CPU's clock) reaches every configuration within
    one step, not in one configuration's round only. Each service still sees one
    client (no request overlaps another), idle while the others answer. The
    order is reshuffled every step (seeded), so none is always first after the
    wait. Returns each service's results and the wall time.
    """
    rng = random.Random(seed)
    bodies = [json.dumps(p).encode() for p in payloads]
    conns = {}
    for name, url in urls.items():
        host, port = url.removeprefix("http://").split(":")
        conns[name] = KeepAliveClient(host, int(port))
    results: dict[str, list[Result]] = {name: [] for name in urls}
    order = list(urls)
    started = time.perf_counter()
    stop_at = started + duration_s
    step = 0
    try:
        while time.perf_counter() < stop_at:
            body = bodies[step % len(bodies)]
            step += 1
            rng.shuffle(order)
            for name in order:
                conn = conns[name]
                t0 = time.perf_counter()
                try:
                    status, raw = await conn.post(path, body)
                except (OSError, asyncio.IncompleteReadError):
                    conn.close()
                    results[name].append(Result(0, time.perf_counter() - t0, None, t0))
                    continue
                seconds = time.perf_counter() - t0
                results[name].append(Result(status, seconds, json.loads(raw) if raw else None, t0))
    finally:
        for conn in conns.values():
            conn.close()
    return results, time.perf_counter() - started
