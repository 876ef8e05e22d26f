"""``divconq distill ...``: the distillation commands (data to evaluation); their
arguments are in ``service/distill/parser.py``."""

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
from service.data import GSM8K_SOCRATIC

log = logging.getLogger(__name__)
DEFAULT_GOLD = GSM8K_SOCRATIC
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
            from service.embedded.engine_config import (
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

    # The step's other flags are named after TrainConfig's fields (distill/parser.py).
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    flags = {name: getattr(args, name) for name in fields if hasattr(args, name)}
    given = {
        "base_model": _base_model(args, settings),
        "data_dir": args.data,
        "out_dir": args.out,
        "alpha": 2 * args.rank,
    }
    cfg = TrainConfig(**(flags | given))
    print(train(cfg))
    return 0


def _service(args: argparse.Namespace, settings: Settings) -> tuple[str, str | None]:
    """The server to measure (``--url``, else this service's) and this service's API key."""
    url = (args.url or f"http://127.0.0.1:{settings.port}").rstrip("/")
    return url, settings.api_keys[0].key.get_secret_value() if settings.api_keys else None


def _publish(table: str, report: Any, out: str | None) -> int:
    """Print an evaluation's table; with ``--out``, write the whole report there as JSON."""
    print(table)
    if out:
        Path(out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


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
    return _publish(markdown(report), report, args.out)


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
    problems = [dataclasses.asdict(r) for r in results]
    return _publish(markdown(report), {"report": report, "problems": problems}, args.out)
