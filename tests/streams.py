"""Test helpers for streamed answers: the app with its fakes on a real socket,
server-sent events read as they arrive, and what a streamed run and a whole one
must agree on."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from service.api.app import create_app
from service.cli import procs
from service.core.settings import Settings
from tests.fakes import FakeDecomposer, ScriptedSolver, transport
from tests.support import wait_until

# Two independent subquestions, for the fake decomposer.
PLAN = "1. How many apples does Tom have?\n2. How many pears does Ann buy?"


def without_latency(value: Any) -> Any:
    """The same accounting, minus the wall times (two runs never take the same time)."""
    if isinstance(value, dict):
        return {k: without_latency(v) for k, v in value.items() if k != "latency_ms"}
    if isinstance(value, list):
        return [without_latency(v) for v in value]
    return value


def wait_for(check: Callable[[], Any], timeout_s: float = 10.0) -> bool:
    """Whether ``check()`` came true within ``timeout_s`` (polled from this thread)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return bool(check())


@contextlib.contextmanager
def live(
    settings: Settings, solver: ScriptedSolver, decomposer: FakeDecomposer | None = None
) -> Iterator[str]:
    """``create_app`` with the fakes, under uvicorn on loopback (real streaming and
    disconnects; the in-process ASGI client buffers whole responses)."""
    app = create_app(
        settings, transport=transport({"solver": solver}), decomposer=decomposer or FakeDecomposer()
    )
    with procs.serve_in_thread(app) as url:
        wait_until(lambda: httpx.get(f"{url}/healthz").status_code == 200, timeout_s=30, what="app")
        yield url


def events(lines: Iterator[str]) -> Iterator[tuple[str | None, str, float]]:
    """(event name, data, perf_counter when it arrived) for each server-sent event."""
    name: str | None = None
    data: list[str] = []
    for line in lines:
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data.append(line.removeprefix("data: "))
        elif line == "" and data:
            yield name, "\n".join(data), time.perf_counter()
            name, data = None, []


def parse(text: str) -> list[tuple[str | None, Any]]:
    """A whole event stream's (name, JSON data) pairs (``[DONE]`` stays a string)."""
    return [
        (name, data if data == "[DONE]" else json.loads(data))
        for name, data, _ in events(iter(text.splitlines()))
    ]
