"""What encoding a batch of spans for OTLP costs: the SDK's encoder against ours.

The spans are those real requests make: the app is built in process as
``tracing_cpu.py`` builds it (tracing on through the standard variables, the
model calls answered by an ``httpx2.MockTransport``), ``static``,
``socratic`` and ``direct`` requests are sent through ASGI, and an in-memory exporter
beside the OTLP one keeps their spans. Each encoder then encodes the same
batch (512 spans, the batch processor's default batch) in rounds that
alternate which goes first; the figure is the median over rounds of CPU
microseconds per span, and the bytes are checked to be the same.

    python benchmarks/otlp_encoding.py --rounds 15
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from _bench import arguments, machine, parse, stub_model, table, write_json
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tracing_cpu import QUESTION, _app

from service.observability.otlp_encoding import encode_spans

BATCH = 512


async def _spans(sink: str) -> list[ReadableSpan]:
    """The spans of enough requests of each mode to fill a batch."""
    kept = InMemorySpanExporter()
    async with _app("on", sink) as (client, tracing):
        tracing.provider.add_span_processor(SimpleSpanProcessor(kept))
        while len(kept.get_finished_spans()) < BATCH:
            for mode in ("static", "socratic", "direct"):
                resp = await client.post("/solve", json={"question": QUESTION, "mode": mode})
                if resp.status_code != 200:
                    raise SystemExit(f"{mode}: HTTP {resp.status_code} {resp.text}")
    return list(kept.get_finished_spans()[:BATCH])


def _per_span_us(encode: Any, batch: list[ReadableSpan], repeat: int) -> float:
    started = time.process_time()
    for _ in range(repeat):
        encode(batch)
    return (time.process_time() - started) / repeat / len(batch) * 1e6


def main() -> None:
    parser = arguments(__doc__ or "")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--repeat", type=int, default=10, help="encodings per round and encoder")
    args = parse(parser, "otlp_encoding", smoke="2 rounds of 1 encoding")
    if args.smoke:
        args.rounds, args.repeat = 2, 1
    with stub_model(0.0) as stub:
        batch = asyncio.run(_spans(stub.url))

    def sdk(spans: list[ReadableSpan]) -> bytes:
        encoded: bytes = sdk_encode(spans).SerializePartialToString()
        return encoded

    same = encode_spans(batch) == sdk(batch)
    if not same:
        raise SystemExit("the encoders' bytes differ")
    encoders = {"sdk": sdk, "ours": encode_spans}
    samples: dict[str, list[float]] = {name: [] for name in encoders}
    for i in range(args.rounds):
        order = list(encoders) if i % 2 == 0 else list(encoders)[::-1]
        for name in order:
            samples[name].append(_per_span_us(encoders[name], batch, args.repeat))
    figure = {name: round(statistics.median(v), 2) for name, v in samples.items()}
    rows = [
        {"encoder": name, "us_per_span": figure[name], "range": f"{min(v):.2f}..{max(v):.2f}"}
        for name, v in samples.items()
    ]
    ratio = figure["ours"] / figure["sdk"]
    print(f"CPU per span, µs, median of {args.rounds} rounds ({len(batch)} spans, same bytes):")
    print(table(rows))
    print(f"ours / sdk: {ratio:.2f}")
    report = {"machine": machine(), "spans": len(batch), "same_bytes": same, "rows": rows}
    write_json(args.out, report | {"ours_over_sdk": round(ratio, 3), "samples_us": samples})


if __name__ == "__main__":
    main()
