"""`divconq solve`: one question, to a running service or one started in process.

Prints the answer, each subquestion with its answer, and the per-stage
accounting; ``--json`` prints the response body instead, ``--stream`` prints
each event as the service sends it (the decomposition before any answer).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from typing import Any

import httpx2

from service.cli.local_service import PROBE_TIMEOUT_S, in_process_server, wait_ready
from service.core.settings import MODES, Settings


def service_url(url: str) -> str:
    """``url`` with a scheme (``localhost:8000`` means ``http://localhost:8000``)."""
    url = url.strip().rstrip("/")
    return url if "://" in url else f"http://{url}"


def add_parser(sub: Any) -> None:
    solve = sub.add_parser(
        "solve",
        help="solve one question and print the accounting",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    solve.add_argument("question", help="the question (quote it)")
    solve.add_argument(
        "--mode", choices=MODES, help="how to solve it; unset = the service's DIVCONQ_DEFAULT_MODE"
    )
    solve.add_argument(
        "--max-subquestions",
        type=int,
        help="cap on subquestions; unset = the service's DIVCONQ_MAX_SUBQUESTIONS",
    )
    solve.add_argument("--context", help="a passage the question is about, sent with it")
    solve.add_argument(
        "--solver", help="solver profile to answer with; unset = the service's default profile"
    )
    solve.add_argument(
        "--url",
        help="a running service, scheme optional (localhost:8000); unset = "
        "http://127.0.0.1:DIVCONQ_PORT, else one started in this process",
    )
    switches = {
        "--stream": "print each event as the service sends it",
        "--json": "print the response as JSON (with --stream: one JSON object per event)",
    }
    for flag, text in switches.items():
        solve.add_argument(flag, action="store_true", help=text)
    solve.set_defaults(func=cmd_solve)


def payload_of(args: argparse.Namespace) -> dict[str, Any]:
    payload: dict[str, Any] = {"question": args.question}
    for key in ("mode", "max_subquestions", "context", "solver"):
        value = getattr(args, key)
        if value is not None:
            payload[key] = value
    if args.stream:
        payload["stream"] = True
    return payload


def cmd_solve(args: argparse.Namespace, settings: Settings) -> int:
    url = service_url(args.url) if args.url else f"http://127.0.0.1:{settings.port}"
    with (
        httpx2.Client(timeout=httpx2.Timeout(600.0, connect=2.0)) as client,
        contextlib.ExitStack() as stack,
    ):
        try:
            client.get(f"{url}/healthz", timeout=PROBE_TIMEOUT_S)
        except httpx2.TransportError:
            if args.url:
                raise SystemExit(f"no service at {url}") from None
            print("no running service; starting one in this process...", file=sys.stderr)
            url = stack.enter_context(in_process_server(settings))
        wait_ready(client, url, timeout_s=900)
        if args.stream:
            return _stream(client, url, payload_of(args), as_json=args.json)
        resp = client.post(f"{url}/solve", json=payload_of(args))
    result = resp.json()
    if args.json or resp.status_code != 200:
        print(json.dumps(result, indent=2))
        return 0 if resp.status_code == 200 else 1
    print_result(result)
    return 0


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, Any]]:
    """(event name, JSON data) for each server-sent event, as it arrives."""
    name, data = "message", []
    for line in lines:
        if line.startswith("event:"):
            name = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data.append(line.removeprefix("data:").strip())
        elif not line and data:
            yield name, json.loads("\n".join(data))
            name, data = "message", []


def _stream(client: httpx2.Client, url: str, payload: dict[str, Any], *, as_json: bool) -> int:
    failed = False
    with client.stream("POST", f"{url}/solve", json=payload) as resp:
        if resp.status_code != 200:  # refused before the stream began: a plain JSON error
            resp.read()
            print(json.dumps(resp.json(), indent=2))
            return 1
        writing = False  # the answer's text is being printed as it streams
        for name, data in sse_events(resp.iter_lines()):
            failed = failed or name == "error"
            if as_json:
                print(json.dumps({"event": name, "data": data}), flush=True)
            elif name == "answer_delta":
                print("" if writing else "answer_text: ", data["text"], sep="", end="", flush=True)
                writing = True
            else:
                if writing:
                    print()  # the answer's text is whole: end its line
                _print_event(name, data, text_shown=writing)
                writing = False
    return 1 if failed else 0


def _print_event(name: str, data: dict[str, Any], *, text_shown: bool = False) -> None:
    if name == "decomposition":
        print("subquestions:")
        for i, question in enumerate(data["subquestions"], 1):
            print(f"  {i}. {question}")
    elif name == "subquestion":
        print(f"  {data['index'] + 1}. {data['question']}")
        print(f"     -> {' '.join(data['answer'].split())[:200]}")
    elif name == "answer":
        print(f"answer: {data['answer']}")
        if not text_shown:
            print(f"answer_text: {' '.join(data['answer_text'].split())[:500]}")
    elif name == "usage":
        _print_usage(data, None)
    elif name == "error":
        print(f"error: {json.dumps(data.get('error', data))}", file=sys.stderr)
    sys.stdout.flush()


def print_result(result: dict[str, Any]) -> None:
    print(f"answer: {result['answer']}")
    for i, sub in enumerate(result["subquestions"], 1):
        print(f"  {i}. {sub['question']}")
        if sub["answer"]:
            print(f"     -> {' '.join(sub['answer'].split())[:200]}")
    print(f"answer_text: {' '.join(result['answer_text'].split())[:500]}")
    _print_usage(result["usage"], result["latency_ms"])


def _print_usage(usage: dict[str, Any], latency_ms: float | None) -> None:
    print(f"{'stage':<11}{'model':<28}{'calls':>6}{'prompt':>8}{'output':>8}{'ms':>10}")
    for stage in ("decomposer", "solver"):
        u = usage[stage]
        print(
            f"{stage:<11}{u['model'][:27]:<28}{u['calls']:>6}{u['prompt_tokens']:>8}"
            f"{u['completion_tokens']:>8}{u['latency_ms']:>10.0f}"
        )
    total = usage["total"]
    ms = f"{latency_ms:>10.0f}" if latency_ms is not None else f"{'':>10}"
    print(
        f"{'total':<11}{'':<28}{'':>6}{total['prompt_tokens']:>8}{total['completion_tokens']:>8}{ms}"
    )
