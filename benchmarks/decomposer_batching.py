"""Decomposer batching: the in-process vLLM engine against transformers ``generate``.

Same model (the embedded Gemma 3 270M checkpoint) in the same dtype, the one
this CPU runs fastest (``service.embedded.hardware``: bfloat16 only with native bf16,
else float32; both backends use every core), same prompts
(``service.pipeline.prompts.static_decomposition`` on GSM8K questions), greedy, the
same fixed number of new tokens (vLLM ``ignore_eos=True``; transformers
``min_new_tokens = max_new_tokens``), at each concurrency level N:

- vLLM: ``service.embedded.engine.EmbeddedEngine`` as the service runs it, N
  generations at once (``asyncio.gather``), batched by the engine;
- transformers: ``AutoModelForCausalLM.generate`` serving one request at a
  time: N requests arrive together and wait in a queue, so a request's
  latency includes its wait.

Reports generated tokens per second (N x new tokens / wall time) and p50/p99
request latency per backend and level, and the speed-up at the largest level.
The two backends run one after the other, never together.

    .venv/bin/python benchmarks/decomposer_batching.py
    .venv/bin/python benchmarks/decomposer_batching.py --smoke
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import time
from pathlib import Path
from typing import Any

from _bench import ROOT, arguments, machine, parse, pct, table, write_json

DATA = ROOT / "service" / "data" / "gsm8k" / "socratic_1000.jsonl"


def prompts(n: int, offset: int = 20) -> list[str]:
    from service.pipeline.prompts import static_decomposition

    lines = DATA.read_text().splitlines()[offset : offset + n]
    return [static_decomposition(json.loads(line)["question"]) for line in lines]


def best_dtype() -> str:
    """The dtype the service's engine resolves to here; transformers gets the same."""
    from service.embedded.hardware import read_cpu_flags, resolve_dtype

    return resolve_dtype("auto", read_cpu_flags())


def row(
    backend: str, n: int, new_tokens: int, latencies: list[float], wall: float
) -> dict[str, Any]:
    return {
        "backend": backend,
        "concurrency": n,
        "new_tokens": new_tokens,
        "tokens_per_s": round(n * new_tokens / wall, 1),
        "latency_p50_s": round(pct(latencies, 50), 2),
        "latency_p99_s": round(pct(latencies, 99), 2),
        "wall_s": round(wall, 2),
    }


async def run_vllm(model_dir: Path, levels: list[int], max_tokens: int) -> list[dict[str, Any]]:
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    from service.core.settings import DecomposerSettings
    from service.embedded.engine import EmbeddedEngine

    engine = EmbeddedEngine(DecomposerSettings(), str(model_dir), "gemma-3-270m")
    t0 = time.perf_counter()
    await engine.start()
    print(f"  vllm engine started in {time.perf_counter() - t0:.1f} s", flush=True)
    # EmbeddedEngine.generate has no ignore_eos knob; the engine it wraps does.
    llm = engine._engine
    assert llm is not None
    params = SamplingParams(
        max_tokens=max_tokens,
        temperature=0.0,
        ignore_eos=True,
        output_kind=RequestOutputKind.FINAL_ONLY,
    )
    seq = 0

    async def one(prompt: str, started: float) -> tuple[float, int]:
        nonlocal seq
        seq += 1
        final = None
        async for out in llm.generate(prompt, params, f"bench-{seq}"):
            final = out
        assert final is not None
        return time.perf_counter() - started, len(final.outputs[0].token_ids)

    rows = []
    try:
        await one(prompts(1)[0], time.perf_counter())  # warm-up
        for n in levels:
            batch = prompts(n)
            started = time.perf_counter()
            done = await asyncio.gather(*(one(p, started) for p in batch))
            wall = time.perf_counter() - started
            assert all(t == max_tokens for _, t in done), done
            rows.append(row("vllm (batched)", n, max_tokens, [s for s, _ in done], wall))
            print(f"  {rows[-1]}", flush=True)
    finally:
        await engine.shutdown()
    return rows


def run_transformers(
    model_dir: Path, levels: list[int], max_tokens: int, max_requests: int | None
) -> list[dict[str, Any]]:
    """One request at a time; N queued requests finish one after another.

    A request's latency is its wait plus its own service time. With
    ``max_requests``, only that many distinct prompts are served and timed;
    a level with more requests is completed with their mean service time
    (serial serving makes that exact in expectation) and marked extrapolated.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    # Any: transformers' generate() is typed for another base class than the
    # one from_pretrained() is declared to return.
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, best_dtype()))
    model.eval()

    def generate(prompt: str) -> float:
        inputs = tok(prompt, return_tensors="pt")
        started = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                **inputs,
                max_new_tokens=max_tokens,
                min_new_tokens=max_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id or tok.eos_token_id,
            )
        assert int(out.shape[1] - inputs["input_ids"].shape[1]) == max_tokens
        return time.perf_counter() - started

    generate(prompts(1)[0])  # warm-up
    top = max(levels)
    n_timed = top if max_requests is None else min(top, max_requests)
    service = [generate(p) for p in prompts(n_timed)]
    print(f"  transformers service times (s): {[round(s, 2) for s in service]}", flush=True)
    mean = sum(service) / len(service)
    rows = []
    for n in levels:
        times = [service[i] if i < n_timed else mean for i in range(n)]
        latencies, clock = [], 0.0
        for t in times:  # all N arrive at 0 and are served in order
            clock += t
            latencies.append(clock)
        row_ = row("transformers (one at a time)", n, max_tokens, latencies, clock)
        row_["extrapolated"] = n > n_timed
        rows.append(row_)
        print(f"  {rows[-1]}", flush=True)
    return rows


def main() -> int:
    parser = arguments(__doc__)
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated levels")
    parser.add_argument("--max-tokens", type=int, default=64, help="new tokens per request")
    parser.add_argument(
        "--hf-requests",
        type=int,
        default=None,
        help="time only this many transformers requests; larger levels use their mean "
        "service time (default: time every request)",
    )
    args = parse(parser, "decomposer_batching")
    if args.smoke:
        args.concurrency, args.max_tokens = "1,2", 4
    levels = [int(c) for c in args.concurrency.split(",")]
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

    from service.core.settings import Settings
    from service.embedded.model_prep import prepare_embedded_model

    info = machine()
    model_dir = prepare_embedded_model(Settings().embedded_model_dir)
    rows = asyncio.run(run_vllm(model_dir, levels, args.max_tokens))
    gc.collect()  # finalise vLLM's client now, not at interpreter exit
    rows += run_transformers(model_dir, levels, args.max_tokens, args.hf_requests)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    sample = prompts(max(levels))
    prompt_tokens = round(sum(len(tok(p)["input_ids"]) for p in sample) / len(sample))

    top = max(levels)
    by = {(r["backend"].split()[0], r["concurrency"]): r for r in rows}
    speedups = {
        str(n): round(by["vllm", n]["tokens_per_s"] / by["transformers", n]["tokens_per_s"], 2)
        for n in levels
    }
    report = {
        "benchmark": "decomposer_batching",
        "machine": info,
        "settings": {
            "model": str(model_dir),
            "dtype": best_dtype(),
            "max_tokens": args.max_tokens,
            "concurrency": levels,
            "mean_prompt_tokens": prompt_tokens,
            "greedy": True,
            "fixed_length": True,
            "transformers_timed_requests": args.hf_requests,
        },
        "rows": rows,
        "speedup_tokens_per_s": speedups,
        "targets": {"speedup_ge_5x_at_32": speedups[str(top)] >= 5.0 if top == 32 else None},
    }
    print()
    print(table(rows))
    print(f"\nvLLM / transformers tokens/s by concurrency: {speedups}")
    write_json(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
