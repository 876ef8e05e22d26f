"""The ``distill`` command's arguments: one sub-command per stage, each with help.

The commands themselves are in ``service/distill/cli.py``.
"""

from __future__ import annotations

import argparse
from typing import Any

from service.distill.cli import (
    DEFAULT_GOLD,
    DEFAULT_TRAIN,
    cmd_data,
    cmd_evaluate,
    cmd_evaluate_solver,
    cmd_merge,
    cmd_socratic,
    cmd_train,
)


def add_parser(sub: Any) -> None:
    distill = sub.add_parser("distill", help="make distillation data and train LoRA adapters")
    steps = distill.add_subparsers(dest="distill_command", required=True)

    mk = steps.add_parser("data", help="build a chat-format decomposition dataset")
    src = mk.add_mutually_exclusive_group()
    src.add_argument("--gold", default=str(DEFAULT_GOLD), help="GSM8K Socratic JSONL")
    src.add_argument("--questions", help="JSONL with question/answer, for a teacher")
    src.add_argument(
        "--from-ledger",
        metavar="URL",
        help="the questions a deployment recorded (DIVCONQ_LEDGER__CONTENT=true), from its "
        "ledger (sqlite:///path or postgresql://...), for a teacher (--recipe sd-t)",
    )
    mk.add_argument("--since", help="--from-ledger: ISO date, UTC (default: 30 days ago)")
    mk.add_argument("--until", help="--from-ledger: ISO date, UTC, exclusive (default: now)")
    teacher = mk.add_mutually_exclusive_group()
    teacher.add_argument("--teacher", help="solver profile that writes decompositions")
    teacher.add_argument(
        "--local-teacher", help="checkpoint directory sampled offline with vLLM (sd-t, sd-c)"
    )
    mk.add_argument(
        "--recipe",
        choices=["sd-t", "sd-r", "sd-c"],
        default="sd-r",
        help="which teacher decompositions to keep: all (sd-t), those whose answer is right "
        "(sd-r), those with the gold step count (sd-c)",
    )
    mk.add_argument("--samples", type=int, default=4, help="local teacher: samples per problem")
    mk.add_argument("--temperature", type=float, default=0.8, help="local teacher")
    mk.add_argument(
        "--with-gold", action="store_true", help="add the teacher's problems to the gold split"
    )
    mk.add_argument(
        "--max-subquestions", type=int, default=8, help="cap on a teacher decomposition"
    )
    mk.add_argument("--concurrency", type=int, default=8, help="teacher requests in flight")
    mk.add_argument(
        "--limit", type=int, help="at most this many problems (from --questions: a seeded sample)"
    )
    mk.add_argument("--held-out", type=int, default=150, help="gold problems kept out of training")
    mk.add_argument("--seed", type=int, default=0, help="seed of the held-out split and samples")
    mk.add_argument("--out", required=True, help="directory for train.jsonl and held_out.jsonl")
    mk.set_defaults(func=cmd_data)

    so = steps.add_parser(
        "socratic", help="Socratic CoT rows: question generator, subproblem solver, static"
    )
    so.add_argument("--gold", default=str(DEFAULT_GOLD), help="GSM8K Socratic JSONL")
    so.add_argument("--sdc", help="SD-C rows from 'distill data --recipe sd-c' to add")
    so.add_argument(
        "--questions", default=str(DEFAULT_TRAIN), help="the JSONL the SD-C rows came from"
    )
    so.add_argument(
        "--gold-limit", type=int, help="at most this many gold training problems (seeded)"
    )
    so.add_argument("--tasks", default="qgen,solve,static", help="comma-separated")
    so.add_argument(
        "--solutions",
        help="GSM8K JSONL (service/data/gsm8k/train.jsonl): add a whole-solution 'direct' solver "
        "row per problem (held-out problems excluded)",
    )
    so.add_argument("--solutions-limit", type=int, help="at most this many of them (seeded)")
    so.add_argument("--held-out", type=int, default=150, help="gold problems kept out of training")
    so.add_argument("--seed", type=int, default=0, help="seed of the held-out split")
    so.add_argument("--out", required=True, help="directory for train.jsonl and held_out.jsonl")
    so.set_defaults(func=cmd_socratic)

    tr = steps.add_parser("train", help="LoRA fine-tune the decomposer")
    tr.add_argument("--data", required=True, help="directory with train.jsonl (+ held_out.jsonl)")
    tr.add_argument("--out", required=True, help="adapter directory")
    tr.add_argument("--base-model", help="HF id or path (default: the embedded Gemma 3 270M)")
    tr.add_argument("--epochs", type=float, default=2.0, help="passes over the training rows")
    tr.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    tr.add_argument("--batch-size", type=int, default=8, help="rows per optimizer step")
    tr.add_argument("--lr", type=float, default=3e-4, help="learning rate")
    tr.add_argument("--rank", type=int, default=16, help="LoRA rank")
    tr.add_argument("--save-every", type=int, default=50, help="checkpoint every N steps")
    tr.add_argument("--eval-every", type=int, default=50, help="held-out loss every N steps")
    tr.add_argument("--seed", type=int, default=0, help="random seed")
    tr.add_argument("--threads", type=int, help="torch CPU threads; unset = torch's default")
    tr.add_argument("--merge", action="store_true", help="also save a merged full checkpoint")
    tr.add_argument("--init-adapter", help="adapter directory to go on training (warm start)")
    tr.set_defaults(func=cmd_train)

    mg = steps.add_parser("merge", help="fold an adapter into a full checkpoint")
    mg.add_argument("--adapter", required=True, help="adapter directory")
    mg.add_argument("--out", required=True, help="checkpoint directory to write")
    mg.add_argument("--base-model", help="HF id or path (default: the embedded Gemma 3 270M)")
    mg.set_defaults(func=cmd_merge)

    ev = steps.add_parser("evaluate", help="score adapters' decompositions via POST /decompose")
    _evaluation_flags(ev, "a running service (default: localhost:DIVCONQ_PORT)")
    ev.add_argument("--adapters", default="none,gsm8k-socratic", help="comma-separated names")
    ev.add_argument("--max-subquestions", type=int, default=8, help="cap per decomposition")
    ev.add_argument("--out", help="write the report as JSON here")
    ev.set_defaults(func=cmd_evaluate)

    es = steps.add_parser(
        "evaluate-solver",
        help="score the subproblem solver alone on gold Socratic decompositions via /v1",
    )
    _evaluation_flags(es, "an OpenAI-compatible server (default: this service's /v1)")
    es.add_argument("--gold", default=str(DEFAULT_GOLD), help="GSM8K Socratic JSONL")
    es.add_argument("--model", help="model name (default: the embedded model's)")
    es.add_argument("--max-tokens", type=int, default=256, help="cap on one solver answer")
    es.add_argument("--out", help="write the report and per-problem results as JSON here")
    es.set_defaults(func=cmd_evaluate_solver)


def _evaluation_flags(p: argparse.ArgumentParser, url_help: str) -> None:
    """What both evaluations take: the held-out rows, the server, how many, how many at once."""
    p.add_argument("--data", required=True, help="held_out.jsonl from 'distill data'")
    p.add_argument("--url", help=url_help)
    p.add_argument("--limit", type=int, help="at most this many problems; unset = all")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight")
