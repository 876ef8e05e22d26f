"""A real trace of one request, received over OTLP/HTTP, drawn as a waterfall and
photographed by headless Chromium (the picture in docs/observability.md).

1. An OTLP/HTTP receiver on loopback decodes what the exporter sends
   (``ExportTraceServiceRequest``, the classes opentelemetry-proto ships).
2. ``python -m service serve`` starts with the standard variables pointing at
   it (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``http/protobuf``); on the embedded
   default this starts the vLLM engine, so run the script under the vLLM lock.
3. One ``/solve`` is sent with a ``traceparent`` of its own; the service is
   stopped, which flushes its batch processor.
4. The spans of that trace are drawn as a Jaeger-style waterfall (one row per
   span, indented by parent, bars on the trace's time axis, the GenAI
   attributes beside them), served on loopback, and Chromium takes the PNG.

    flock /tmp/divconq-vllm.lock .venv/bin/python scripts/trace_screenshot.py \\
        --out docs/trace-static.png

``--phoenix URL``: the spans go to a running Arize Phoenix instead (an
OpenTelemetry trace backend with a web UI, from PyPI; steps 1 and 4 are then
Phoenix's own: its OTLP/HTTP endpoint receives them, its trace view shows
them), filed under the project ``divconq`` (``openinference.project.name``,
a resource attribute), and Chromium photographs Phoenix's page of the trace
with the workflow span selected:

    python3 -m venv /tmp/phoenix && /tmp/phoenix/bin/pip install arize-phoenix
    PHOENIX_WORKING_DIR=/tmp/phoenix-data /tmp/phoenix/bin/phoenix serve &
    flock /tmp/divconq-vllm.lock .venv/bin/python scripts/trace_screenshot.py \\
        --phoenix http://127.0.0.1:6006 --out docs/trace-static-phoenix.png

Needs Debian's ``chromium`` (``apt-get install chromium``). ``--spans-json``
also keeps the decoded spans (our receiver's only).
"""

from __future__ import annotations

import argparse
import html
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from service.cli.procs import bound_socket, url_of

ROOT = Path(__file__).resolve().parent.parent
QUESTION = (
    "Sam has 5 boxes with 8 pencils in each box. He gives away 10 pencils. "
    "How many pencils does he have left?"
)
KINDS = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
SHOWN = (
    "divconq.stage",
    "gen_ai.operation.name",
    "gen_ai.provider.name",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.response.finish_reasons",
    "divconq.mode",
    "divconq.subquestions",
    "divconq.cache",
    "http.response.status_code",
    "error.type",
)


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


class Receiver:
    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.add(ExportTraceServiceRequest.FromString(body))
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, request: ExportTraceServiceRequest) -> None:
        for rs in request.resource_spans:
            resource = {a.key: _value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    self.spans.append(
                        {
                            "trace_id": s.trace_id.hex(),
                            "span_id": s.span_id.hex(),
                            "parent_id": s.parent_span_id.hex(),
                            "name": s.name,
                            "kind": KINDS.get(s.kind, "unspecified"),
                            "start_ns": s.start_time_unix_nano,
                            "end_ns": s.end_time_unix_nano,
                            "status": s.status.code,
                            "attributes": {a.key: _value(a.value) for a in s.attributes},
                            "service": resource.get("service.name", ""),
                            "schema_url": ss.schema_url,
                        }
                    )


def run_request(
    endpoint: str, mode: str, timeout_s: float, **otel: str
) -> tuple[str, dict[str, Any]]:
    """Serve, exporting to ``endpoint`` over OTLP/HTTP (more ``OTEL_*`` in ``otel``),
    send one /solve under a fresh trace id, stop (flushing the spans)."""
    trace_id = secrets.token_hex(16)
    sock = bound_socket()  # handed over: no other process can take the port meanwhile
    env = {
        **os.environ,
        "DIVCONQ_LOG_LEVEL": "warning",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_SERVICE_NAME": "divconq",
        **otel,
    }
    args = [sys.executable, "-m", "service", "serve", "--fd", str(sock.fileno())]
    proc = subprocess.Popen(args, cwd=ROOT, env=env, pass_fds=(sock.fileno(),))
    url = url_of(sock)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the service did not become ready")
            time.sleep(1.0)
        resp = httpx.post(
            f"{url}/solve",
            json={"question": QUESTION, "mode": mode, "cache": False},
            headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"},
            timeout=timeout_s,
        )
        resp.raise_for_status()
        body: dict[str, Any] = resp.json()
    finally:
        proc.terminate()
        proc.wait(timeout=120)
        sock.close()
    return trace_id, body


def page(spans: list[dict[str, Any]], title: str) -> str:
    """A Jaeger-style waterfall of one trace."""
    by_parent: dict[str, list[dict[str, Any]]] = {}
    ids = {s["span_id"] for s in spans}
    for s in spans:
        parent = s["parent_id"] if s["parent_id"] in ids else ""
        by_parent.setdefault(parent, []).append(s)
    t0 = min(s["start_ns"] for s in spans)
    total = max(s["end_ns"] for s in spans) - t0
    rows: list[str] = []

    def walk(parent: str, depth: int) -> None:
        for s in sorted(by_parent.get(parent, []), key=lambda x: x["start_ns"]):
            left = 100.0 * (s["start_ns"] - t0) / total
            width = max(0.3, 100.0 * (s["end_ns"] - s["start_ns"]) / total)
            ms = (s["end_ns"] - s["start_ns"]) / 1e6
            attrs = " ".join(
                f"<span class=k>{html.escape(k)}</span>=<span class=v>"
                f"{html.escape(json.dumps(s['attributes'][k]))}</span>"
                for k in SHOWN
                if k in s["attributes"]
            )
            err = " err" if s["status"] == 2 else ""
            rows.append(
                f"<tr><td class=name style='padding-left:{8 + 18 * depth}px'>"
                f"<b>{html.escape(s['name'])}</b> <i>{s['kind']}</i><div class=attrs>{attrs}</div>"
                f"</td><td class=lane><div class='bar {s['kind']}{err}' "
                f"style='left:{left:.2f}%;width:{width:.2f}%'></div>"
                f"<span class=ms style='left:{min(left + width, 88):.2f}%'>{ms:.1f} ms</span>"
                "</td></tr>"
            )
            walk(s["span_id"], depth + 1)

    walk("", 0)
    ticks = "".join(
        f"<span style='left:{i * 20}%'>{total * i / 5e6:.0f} ms</span>" for i in range(5)
    )
    return f"""<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>
<style>
body{{font:13px/1.35 system-ui,sans-serif;margin:0;color:#1b1f24;background:#fff}}
header{{background:#2c3e50;color:#fff;padding:10px 16px;font-size:15px}}
header small{{color:#cdd6df;margin-left:12px}}
table{{border-collapse:collapse;width:100%}}
td{{border-bottom:1px solid #e6e9ed;vertical-align:top;padding:5px 8px}}
td.name{{width:44%}} td.lane{{position:relative}}
.axis{{position:relative;height:18px;margin-left:44%;color:#6a737d;font-size:11px}}
.axis span{{position:absolute;padding-left:8px}}
.bar{{position:absolute;top:7px;height:12px;border-radius:2px;background:#5b8def}}
.bar.server{{background:#1f9d8a}} .bar.client{{background:#e8912d}}
.bar.internal{{background:#7b61c9}} .bar.err{{background:#d64545}}
.ms{{position:absolute;top:4px;margin-left:6px;padding:0 3px;font-size:11px;color:#222;
background:#ffffffd0;border-radius:2px}}
i{{color:#6a737d;font-style:normal;font-size:11px}}
.attrs{{font:11px ui-monospace,monospace;color:#444;margin-top:2px}}
.k{{color:#6f42c1}} .v{{color:#032f62}}
</style>
<header>{html.escape(title)}</header><div class=axis>{ticks}</div>
<table>{"".join(rows)}</table>"""


def chromium(url: str, out: Path, width: int, height: int, *extra: str) -> None:
    """Headless Chromium's picture of ``url``."""
    subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--window-size={width},{height}",
            f"--screenshot={out.resolve()}",
            *extra,
            url,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


def screenshot(html_text: str, out: Path, width: int, height: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "index.html").write_text(html_text, encoding="utf-8")

        class Quiet(SimpleHTTPRequestHandler):
            def __init__(self, *a: Any, **k: Any) -> None:
                super().__init__(*a, directory=tmp, **k)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            chromium(f"http://127.0.0.1:{server.server_address[1]}/index.html", out, width, height)
        finally:
            server.shutdown()


PHOENIX_PROJECT = "divconq"
_PHOENIX_TRACE = """query ($trace: ID!) { projects { edges { node { id name
  trace(traceId: $trace) { spans(first: 100) { edges { node { id name } } } } } } } }"""


def phoenix_trace(phoenix: str, trace_id: str, timeout_s: float) -> tuple[str, dict[str, str]]:
    """The Phoenix project holding ``trace_id`` and the trace's spans (node id -> name),
    once every span has arrived (Phoenix files what it receives in the background)."""
    deadline = time.monotonic() + timeout_s
    seen: dict[str, str] = {}
    while time.monotonic() < deadline:
        reply = httpx.post(
            f"{phoenix}/graphql",
            json={"query": _PHOENIX_TRACE, "variables": {"trace": trace_id}},
            timeout=30,
        ).json()
        for edge in reply["data"]["projects"]["edges"]:
            project = edge["node"]
            if project["name"] == PHOENIX_PROJECT and project["trace"]:
                spans = {
                    e["node"]["id"]: e["node"]["name"] for e in project["trace"]["spans"]["edges"]
                }
                if spans and spans == seen:  # the same twice in a row: all in
                    return project["id"], spans
                seen = spans
        time.sleep(2.0)
    raise SystemExit(f"Phoenix at {phoenix} did not show trace {trace_id}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "trace-static.png")
    parser.add_argument("--mode", default="static")
    parser.add_argument("--spans-json", type=Path, default=None, help="also write the spans")
    parser.add_argument("--timeout-s", type=float, default=600.0)
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=0, help="0: fit the rows")
    parser.add_argument(
        "--phoenix", default=None, help="a running Arize Phoenix's URL: photograph its trace view"
    )
    args = parser.parse_args()
    if args.phoenix:
        phoenix = args.phoenix.rstrip("/")
        trace_id, body = run_request(
            phoenix,
            args.mode,
            args.timeout_s,
            OTEL_RESOURCE_ATTRIBUTES=f"openinference.project.name={PHOENIX_PROJECT}",
        )
        project, spans_ = phoenix_trace(phoenix, trace_id, 120.0)
        workflow = next(i for i, name in spans_.items() if name.startswith("invoke_workflow"))
        page_url = f"{phoenix}/projects/{project}/traces/{trace_id}?selectedSpanNodeId={workflow}"
        # (Phoenix's page is drawn by scripts: time for them to fetch and draw)
        chromium(page_url, args.out, args.width, args.height or 1000, "--virtual-time-budget=20000")
        print(
            f"wrote {args.out} (Phoenix's view of trace {trace_id}, {len(spans_)} spans, "
            f"answer {body.get('answer')!r})"
        )
        return 0
    receiver = Receiver()
    trace_id, body = run_request(receiver.url, args.mode, args.timeout_s)
    spans = [s for s in receiver.spans if s["trace_id"] == trace_id]
    if not spans:
        raise SystemExit("no spans of the request arrived")
    if args.spans_json:
        args.spans_json.write_text(json.dumps(spans, indent=1) + "\n")
    title = (
        f"Trace {trace_id} · POST /solve mode={args.mode} · {len(spans)} spans · "
        f"answer {body.get('answer')!r}"
    )
    height = args.height or 60 + 74 * len(spans)
    screenshot(page(spans, title), args.out, args.width, height)
    print(f"wrote {args.out} ({len(spans)} spans of trace {trace_id})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
