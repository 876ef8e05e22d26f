"""Distillation: dataset building, a real (tiny) LoRA training run with resume,
and serving the result through the vLLM decomposer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.core.settings import Settings
from service.distill import data
from service.evaluation.datasets import solution_steps
from service.pipeline import prompts
from tests.stacks import TinyAdapter
from tests.support import service_cli

ROOT = Path(__file__).resolve().parent.parent
GOLD = ROOT / "service/data/gsm8k/socratic_1000.jsonl"
TRAIN = ROOT / "service/data/gsm8k/train.jsonl"
SHIPPED = ROOT / "service/adapters/gsm8k-socratic"


def test_gold_import_skips_fewshot_and_repeats() -> None:
    examples = data.load_gold(GOLD)
    ids = {e.id for e in examples}
    for i in prompts.FEWSHOT_SOURCE_INDICES:
        assert f"socratic_1000-{i}" not in ids
    assert len(examples) == 1000 - len(prompts.FEWSHOT_SOURCE_INDICES)
    # Line 988 repeats "How much does she save?" in its gold steps.
    jessica = next(e for e in examples if e.id == "socratic_1000-988")
    assert jessica.subquestions.count("How much does she save?") == 1
    assert jessica.answer == "6"
    row = examples[0].to_json()
    assert row["messages"][0]["content"] == prompts.distilled_decomposition(row["question"])
    assert row["messages"][1]["content"].startswith("1. How many eggs does Janet sell?\n")


def test_dedupe_and_split_are_deterministic() -> None:
    examples = data.load_gold(GOLD)[:50]
    twice = data.dedupe([*examples, *examples])
    assert [e.id for e in twice] == [e.id for e in examples]
    a = data.split(twice, 10, seed=3)
    b = data.split(twice, 10, seed=3)
    assert [e.id for e in a[1]] == [e.id for e in b[1]]
    assert len(a[0]) == 40 and len(a[1]) == 10
    assert not {e.id for e in a[0]} & {e.id for e in a[1]}


def test_gold_steps_count_solution_lines() -> None:
    first = json.loads(TRAIN.read_text().splitlines()[0])
    lines = [x for x in first["answer"].split("\n") if x.strip() and not x.startswith("####")]
    assert solution_steps(first["answer"]) == len(lines) >= 2
    assert solution_steps("a\n\nb\n#### 4") == 2
    assert solution_steps("no final answer line") is None
    questions = data.load_questions(TRAIN)
    assert len(questions) == 7473 and all(q.meta["steps"] >= 2 for q in questions)


def test_teacher_outputs_are_checked_before_training() -> None:
    from service.distill.local_teacher import pick

    two = ["How many apples are there?", "How many pears are left?"]
    assert data.acceptable(two, 0, recipe="sd-c", steps=2)
    assert data.acceptable(two, 0, recipe="sd-t", steps=None)
    assert not data.acceptable(two, 0, recipe="sd-c", steps=3)  # wrong count
    assert not data.acceptable(two, 0, recipe="sd-c", steps=None)  # nothing to check against
    assert not data.acceptable(two, 1, recipe="sd-t", steps=2)  # the teacher repeated itself
    near = ["How many apples does Tom have?", "How many apples does Tom have now?"]
    assert not data.acceptable(near, 0, recipe="sd-t", steps=2)
    samples = ["1. A b?\n2. A b?\n", "1. How many?\n", "1. How many apples?\n2. How much?\n"]
    right_count = ["How many apples?", "How much?"]
    assert pick(samples, recipe="sd-c", steps=2, max_subquestions=8) == right_count
    assert pick(samples, recipe="sd-t", steps=2, max_subquestions=8) == ["How many?"]
    assert pick(samples[:1], recipe="sd-t", steps=2, max_subquestions=8) is None


def test_local_teacher_resumes_after_interruption(tmp_path: Path) -> None:
    """A killed sampling run loses at most its current chunk: rerun, it samples
    only the problems not on file and returns what one run would have."""
    from service.distill.local_teacher import decompose_in_chunks

    questions = data.load_questions(TRAIN)[:5]
    good = {
        q.id: [f"What is step {i} of {q.id}?" for i in range(q.meta["steps"])] for q in questions
    }
    wrong = {q.id: "1. Only one step?" for q in questions}
    sampled: list[str] = []

    def sample(prompt_texts: list[str]) -> list[list[str]]:
        ids = [next(q.id for q in questions if q.question in t) for t in prompt_texts]
        sampled.extend(ids)
        if len(sampled) > 4:
            raise KeyboardInterrupt  # killed during the third chunk
        # Problem 1 never gets a right-count sample: it is on file as tried.
        return [
            [wrong[i], "\n".join(f"{n}. {s}" for n, s in enumerate(good[i], 1))]
            if i != questions[1].id
            else [wrong[i]]
            for i in ids
        ]

    progress = tmp_path / "teacher_progress.jsonl"
    kw: dict[str, Any] = {
        "recipe": "sd-c",
        "max_subquestions": 8,
        "meta": {"samples": 2},
        "chunk": 2,
    }
    settings = {"teacher": "m", "samples": 2}
    with pytest.raises(KeyboardInterrupt):
        decompose_in_chunks(questions, sample, progress=progress, settings=settings, **kw)
    assert sampled == [q.id for q in questions[:4]] + [questions[4].id]
    with progress.open("a") as fh:
        fh.write('{"id": "torn')  # the kill cut a line short
    sampled.clear()
    kept = decompose_in_chunks(questions, sample, progress=progress, settings=settings, **kw)
    assert sampled == [questions[4].id]  # only the unfinished chunk again
    assert [e.id for e in kept] == [q.id for i, q in enumerate(questions) if i != 1]
    assert all(e.subquestions == good[e.id] and e.source == "sd-c" for e in kept)
    assert kept[0].meta == {"samples": 2} | questions[0].meta
    # Other settings (another teacher, say) start over.
    sampled.clear()
    with pytest.raises(KeyboardInterrupt):
        decompose_in_chunks(questions, sample, progress=progress, settings={"teacher": "n"}, **kw)
    assert sampled[:2] == [questions[0].id, questions[1].id]


def test_distilled_target_format() -> None:
    assert prompts.distilled_target(["A?", "B?"]) == "1. A?\n2. B?\n"
    assert prompts.distilled_target([]) == "none\n"


def test_training_resumes_from_checkpoints(tiny_adapter: TinyAdapter) -> None:
    adapter = tiny_adapter.path
    assert len((tiny_adapter.data / "train.jsonl").read_text().splitlines()) == 8
    assert tiny_adapter.first_checkpoints == ["step-1", "step-2"]
    # The resumed run keeps the latest checkpoints only.
    assert sorted(p.name for p in (adapter / "checkpoints").iterdir()) == ["step-2", "step-3"]
    assert (adapter / "checkpoints/step-3/adapter/adapter_config.json").is_file()
    stderr = tiny_adapter.resumed.stderr
    assert "resuming from" in stderr and "step-2" in stderr
    history = [json.loads(line) for line in (adapter / "training.jsonl").read_text().splitlines()]
    assert [r["step"] for r in history] == [1, 2, 3]  # resumed, not restarted
    assert all(r["loss"] > 0 and "held_out_loss" in r for r in history)
    summary = json.loads((adapter / "train_summary.json").read_text())
    assert summary["steps"] == 3 and summary["train_examples"] == 8
    assert (adapter / "adapter_model.safetensors").stat().st_size > 1_000_000


def test_trained_adapter_is_served(service_url: str, model_dir: Path) -> None:
    from transformers import AutoTokenizer

    url = service_url
    ready = httpx.get(f"{url}/readyz").json()["decomposer"]
    assert "tiny" in ready["adapters"] and ready["default_adapter"] == SHIPPED.name
    question = "A pen costs $3 and a book costs $5 more. How much do both cost?"
    tiny = httpx.post(
        f"{url}/decompose", json={"question": question, "decomposer_adapter": "tiny"}, timeout=300
    )
    assert tiny.status_code == 200, tiny.text
    usage = tiny.json()["usage"]["decomposer"]
    assert usage["adapter"] == "tiny"
    # The adapter gets the short distilled prompt, counted by the engine.
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    expected = len(tokenizer(prompts.distilled_decomposition(question))["input_ids"])
    assert usage["prompt_tokens"] == expected
    base = httpx.post(
        f"{url}/decompose", json={"question": question, "decomposer_adapter": "none"}, timeout=300
    )
    assert base.status_code == 200
    assert base.json()["usage"]["decomposer"]["adapter"] is None
    assert base.json()["usage"]["decomposer"]["prompt_tokens"] > 4 * usage["prompt_tokens"]
    solved = httpx.post(
        f"{url}/solve",
        json={"question": question, "mode": "hinted", "decomposer_adapter": "tiny"},
        timeout=300,
    )
    assert solved.status_code == 200, solved.text
    assert solved.json()["usage"]["decomposer"]["adapter"] == "tiny"


def test_evaluate_scores_adapters_through_decompose(
    service_url: str, tiny_adapter: TinyAdapter, tmp_path: Path
) -> None:
    held_out = tiny_adapter.data / "held_out.jsonl"
    out = tmp_path / "report.json"
    run = service_cli(
        "distill", "evaluate", "--data", str(held_out), "--adapters", "none,tiny",
        "--url", service_url, "--out", str(out),
    )  # fmt: skip
    report = json.loads(out.read_text())
    assert set(report) == {"gold", "none", "tiny"}
    # The gold row is the reference: perfect by construction.
    assert report["gold"]["f1"] == 1.0 and report["gold"]["count_exact"] == 1.0
    assert report["gold"]["repeat_rate"] == 0.0
    for name in ("none", "tiny"):
        row = report[name]
        assert row["problems"] == 4
        assert 0.0 <= row["f1"] <= 1.0 and 0.0 <= row["repeat_rate"] <= 1.0
        assert row["count_exact"] <= row["count_within_one"]
    # The distilled prompt is the short one: the cost argument of the paper.
    assert report["tiny"]["prompt_tokens"] * 4 < report["none"]["prompt_tokens"]
    assert "| tiny |" in run.stdout


def test_unknown_adapter_is_422(service_url: str) -> None:
    for path in ("/decompose", "/solve"):
        resp = httpx.post(
            f"{service_url}{path}",
            json={"question": "What is 2 + 2?", "decomposer_adapter": "nope"},
        )
        assert resp.status_code == 422
        assert "unknown decomposer_adapter 'nope'" in resp.json()["error"]["message"]


def test_local_teacher_adds_right_count_decompositions(tmp_path: Path, model_dir: Path) -> None:
    """SD-C for real: the shipped adapter, merged, samples decompositions of
    GSM8K training problems; only those with the gold step count are kept,
    beside the gold split (whose held-out part is unchanged)."""
    merged = tmp_path / "merged"
    service_cli("distill", "merge", "--adapter", str(SHIPPED), "--out", str(merged))
    assert (merged / "model.safetensors").is_file() and (merged / "tokenizer.json").is_file()
    out = tmp_path / "data"
    service_cli(
        "distill", "data", "--questions", str(TRAIN), "--limit", "8", "--with-gold",
        "--local-teacher", str(merged), "--recipe", "sd-c", "--samples", "4", "--out", str(out),
    )  # fmt: skip
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    held = [json.loads(line) for line in (out / "held_out.jsonl").read_text().splitlines()]
    gold_train, gold_held = data.split(data.dedupe(data.load_gold(GOLD)), 150, seed=0)
    assert [r["id"] for r in held] == [e.id for e in gold_held]
    assert [r["id"] for r in rows[: len(gold_train)]] == [e.id for e in gold_train]
    taught = rows[len(gold_train) :]
    assert 1 <= len(taught) <= 8 and {r["source"] for r in taught} == {"sd-c"}
    steps = {q.question: q.meta["steps"] for q in data.load_questions(TRAIN)}
    for row in taught:
        assert len(row["subquestions"]) == steps[row["question"]] == row["meta"]["steps"]
        assert len(set(row["subquestions"])) == len(row["subquestions"])
        assert row["messages"][1]["content"] == prompts.distilled_target(row["subquestions"])


def test_local_teacher_rejects_answer_checked_recipe(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "service", "distill", "data", "--questions", str(TRAIN),
         "--local-teacher", str(tmp_path), "--recipe", "sd-r", "--out", str(tmp_path / "d")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0 and "a local teacher takes --recipe sd-t or sd-c" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_settings_reject_unknown_default_adapter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIVCONQ_DECOMPOSER__ADAPTER", "missing")
    with pytest.raises(ValueError, match="unknown adapter 'missing'"):
        Settings()


def test_train_flags_reach_the_training_config(monkeypatch: pytest.MonkeyPatch) -> None:
    import service.distill.train as training
    from service.cli.main import main

    seen: list[training.TrainConfig] = []

    def train(cfg: training.TrainConfig) -> str:
        seen.append(cfg)
        return "trained"

    monkeypatch.setattr(training, "train", train)
    argv = ["distill", "train", "--data", "d", "--out", "o", "--base-model", "b", "--rank", "8"]
    argv += ["--max-steps", "3", "--lr", "0.001", "--init-adapter", "a", "--merge"]
    assert main(argv) == 0
    (cfg,) = seen
    assert (cfg.base_model, cfg.data_dir, cfg.out_dir) == ("b", "d", "o")
    assert (cfg.rank, cfg.alpha, cfg.max_steps, cfg.lr) == (8, 16, 3, 0.001)
    assert (cfg.init_adapter, cfg.merge, cfg.epochs, cfg.dropout) == ("a", True, 2.0, 0.0)
