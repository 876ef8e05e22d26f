"""``python -m service distill ...``: the distillation commands (data to evaluation)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import random
import time
from pathlib import Path
from typing import Any

from service.core.settings import Settings

log = logging.getLogger(__name__)
DEFAULT_GOLD = Path(__file__).resolve().parents[2] / "data" / "gsm8k" / "socratic_1000.jsonl"
DEFAULT_TRAIN = DEFAULT_GOLD.with_name("train.jsonl")


def cmd_data(args: argparse.Namespace, settings: Settings) -> int:
    from service.distill import data

    taught: list[data.Example] = []
    has_teacher = bool(args.teacher or args.local_teacher)
    if args.from_ledger:
        if not has_teacher:
            raise SystemExit("--from-ledger needs a teacher (--teacher or --local-teacher)")
        if args.recipe not in data.LEDGER_RECIPES:
            raise SystemExit(
                "recorded questions have no gold answer: --from-ledger takes --recipe sd-t"
            )
        # The held-out split stays gold: it is scored against gold answers.
        args.with_gold = True
    if has_teacher:
        questions = data.dedupe(_teacher_questions(args))
        if args.limit:
            # A seeded sample, not the file's first lines (often grouped by source).
            random.Random(args.seed).shuffle(questions)
            questions = questions[: args.limit]
        if args.local_teacher:
            from service.distill.local_teacher import LOCAL_RECIPES, local_decompositions
            from service.embedded.engine import (
                apply_engine_env,
                engine_args,
                engine_env,
                engine_hardware,
                executor_backend,
            )

            if args.recipe not in LOCAL_RECIPES:
                raise SystemExit(f"a local teacher takes --recipe {' or '.join(LOCAL_RECIPES)}")
            # The service decomposer's engine settings, resolved for this machine.
            hw = engine_hardware(settings.decomposer)
            env = engine_env(settings.decomposer, hw)
            if hw.executor == "uni":
                # Offline, nothing else needs this process: the engine core
                # runs in it too (no process to start, no client polling
                # beside the model's threads): 78 s against 98 s for 32
                # problems x 4 samples on 2 cores (docs/benchmarks.md).
                env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
            apply_engine_env(env)
            log.info(f"local teacher engine: {hw.as_dict()}")
            taught = local_decompositions(
                questions,
                args.local_teacher,
                recipe=args.recipe,
                samples=args.samples,
                temperature=args.temperature,
                max_subquestions=args.max_subquestions,
                seed=args.seed,
                # The model in the engine-core process, as in the service:
                # one process (and a gigabyte or more) fewer than vLLM's CPU default.
                engine_args=engine_args(settings.decomposer, hw)
                | {"distributed_executor_backend": executor_backend(hw)},
                # Rerunning the same command resumes from here.
                progress=Path(args.out) / "teacher_progress.jsonl",
            )
        else:
            taught = asyncio.run(_chat_teacher(args, settings, questions))
        log.info(f"teacher kept {len(taught)} of {len(questions)} problems ({args.recipe})")
    if has_teacher and not args.with_gold:
        train, held = data.split(taught, args.held_out, args.seed)
    else:
        gold = data.dedupe(data.load_gold(Path(args.gold)))
        # With a teacher, --limit applied to its questions.
        gold = gold[: args.limit] if args.limit and not has_teacher else gold
        # Held-out problems come from the gold set only: evaluation scores
        # against gold subquestions, and the split stays the one gold alone gives.
        train, held = data.split(gold, args.held_out, args.seed)
        train = data.dedupe([*held, *train, *taught])[len(held) :]
    data.write_dataset(Path(args.out), train, held)
    print(f"{args.out}: {len(train)} train, {len(held)} held out")
    return 0


def _teacher_questions(args: argparse.Namespace) -> list[Any]:
    from service.distill import data

    if args.from_ledger:
        from service.ledger.report import time_range

        try:
            since, until = time_range(args.since, args.until, time.time())
        except ValueError as exc:
            raise SystemExit(str(exc)) from None
        recorded = data.load_ledger(args.from_ledger, since, until)
        if not recorded:
            raise SystemExit(
                "no recorded questions in that ledger and range (questions are recorded "
                "only with DIVCONQ_LEDGER__CONTENT=true)"
            )
        return recorded
    if not args.questions:
        raise SystemExit("a teacher needs --questions or --from-ledger")
    return data.load_questions(Path(args.questions))


async def _chat_teacher(
    args: argparse.Namespace, settings: Settings, questions: list[Any]
) -> list[Any]:
    import httpx2

    from service.distill import data
    from service.observability.metrics import Metrics
    from service.solver import SolverDeps, build_solvers

    async with httpx2.AsyncClient() as http:
        solvers = build_solvers(settings, SolverDeps(http), Metrics())
        if args.teacher not in solvers:
            raise SystemExit(f"unknown solver profile {args.teacher!r}")
        return await data.teacher_decompositions(
            questions,
            solvers[args.teacher],
            recipe=args.recipe,
            max_subquestions=args.max_subquestions,
            concurrency=args.concurrency,
        )


def cmd_socratic(args: argparse.Namespace, settings: Settings) -> int:
    """Question-generator, solver and static rows, on the same split as ``distill data``."""
    from service.distill import data, socratic

    gold_path = Path(args.gold)
    gold = data.dedupe(data.load_gold(gold_path))
    train, held = data.split(gold, args.held_out, args.seed)
    train_ids, held_ids = socratic.split_ids(train, held)
    worked = socratic.load_gold_worked(gold_path, train_ids)
    if args.gold_limit is not None:
        # A warm restart that replays every gold problem again drifts towards
        # them (docs/distillation.md, stage 4's restarts); new SD-C problems
        # can take most of the batch instead.
        worked = random.Random(args.seed).sample(worked, min(args.gold_limit, len(worked)))
    if args.sdc:
        rows = data.read_dataset(Path(args.sdc))
        worked += socratic.align_sdc(rows, Path(args.questions))
    tasks = args.tasks.split(",")
    rows = socratic.rows_for(worked, tasks)
    if args.solutions:
        solved = socratic.load_solutions(Path(args.solutions), (e.question for e in held))
        if args.solutions_limit is not None:
            solved = random.Random(args.seed).sample(solved, min(args.solutions_limit, len(solved)))
        rows += socratic.rows_for(solved, socratic.SOLUTION_TASKS)
        print(f"{len(solved)} whole-solution rows from {args.solutions}")
    out = Path(args.out)
    n_train = socratic.write_rows(out / "train.jsonl", rows)
    held_worked = socratic.load_gold_worked(gold_path, held_ids)
    n_held = socratic.write_rows(out / "held_out.jsonl", socratic.rows_for(held_worked, tasks))
    # The held-out problems themselves, for `python -m service eval --data`.
    data.write_dataset(out / "problems", [], held)
    print(f"{out}: {n_train} train rows from {len(worked)} problems, {n_held} held-out rows")
    return 0


def _base_model(args: argparse.Namespace, settings: Settings) -> str:
    if args.base_model is not None:
        return str(args.base_model)
    from service.embedded.model_prep import prepare_embedded_model

    return str(prepare_embedded_model(settings.embedded_model_dir))


def cmd_merge(args: argparse.Namespace, settings: Settings) -> int:
    from service.distill.train import merge_adapter

    print(merge_adapter(_base_model(args, settings), args.adapter, args.out))
    return 0


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    from service.distill.train import TrainConfig, train

    base = _base_model(args, settings)
    cfg = TrainConfig(
        base_model=base,
        data_dir=args.data,
        out_dir=args.out,
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        lr=args.lr,
        rank=args.rank,
        alpha=2 * args.rank,
        save_every=args.save_every,
        eval_every=args.eval_every,
        seed=args.seed,
        threads=args.threads,
        merge=args.merge,
        init_adapter=args.init_adapter,
    )
    print(train(cfg))
    return 0


def _service(args: argparse.Namespace, settings: Settings) -> tuple[str, str | None]:
    """The server to measure (``--url``, else this service's) and this service's API key."""
    url = (args.url or f"http://127.0.0.1:{settings.port}").rstrip("/")
    return url, settings.api_keys[0].key.get_secret_value() if settings.api_keys else None


def cmd_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from service.distill.evaluate import evaluate, markdown

    url, key = _service(args, settings)
    report = evaluate(
        url,
        Path(args.data),
        args.adapters.split(","),
        limit=args.limit,
        cap=args.max_subquestions,
        concurrency=args.concurrency,
        api_key=key,
    )
    print(markdown(report))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def cmd_evaluate_solver(args: argparse.Namespace, settings: Settings) -> int:
    from service.distill.solver_eval import evaluate_solver, markdown

    url, key = _service(args, settings)
    report, results = asyncio.run(
        evaluate_solver(
            url,
            Path(args.data),
            Path(args.gold),
            model=args.model or settings.decomposer_model_name,
            limit=args.limit,
            concurrency=args.concurrency,
            max_tokens=args.max_tokens,
            api_key=key,
        )
    )
    print(markdown(report))
    if args.out:
        out = {"report": report, "problems": [dataclasses.asdict(r) for r in results]}
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


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
        help="GSM8K JSONL (data/gsm8k/train.jsonl): add a whole-solution 'direct' solver row "
        "per problem (held-out problems excluded)",
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
    ev.add_argument("--data", required=True, help="held_out.jsonl from 'distill data'")
    ev.add_argument("--adapters", default="none,gsm8k-socratic", help="comma-separated names")
    ev.add_argument("--url", help="a running service (default: localhost:DIVCONQ_PORT)")
    ev.add_argument("--limit", type=int, help="at most this many problems; unset = all")
    ev.add_argument("--max-subquestions", type=int, default=8, help="cap per decomposition")
    ev.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    ev.add_argument("--out", help="write the report as JSON here")
    ev.set_defaults(func=cmd_evaluate)

    es = steps.add_parser(
        "evaluate-solver",
        help="score the subproblem solver alone on gold Socratic decompositions via /v1",
    )
    es.add_argument("--data", required=True, help="held_out.jsonl from 'distill data'")
    es.add_argument("--gold", default=str(DEFAULT_GOLD), help="GSM8K Socratic JSONL")
    es.add_argument("--url", help="an OpenAI-compatible server (default: this service's /v1)")
    es.add_argument("--model", help="model name (default: the embedded model's)")
    es.add_argument("--limit", type=int, help="at most this many problems; unset = all")
    es.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    es.add_argument("--max-tokens", type=int, default=256, help="cap on one solver answer")
    es.add_argument("--out", help="write the report and per-problem results as JSON here")
    es.set_defaults(func=cmd_evaluate_solver)
