"""The evaluation harness past scoring single items: per-mode summaries, reports,
the resumable runner and ``python -m service eval`` itself."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from service.core.settings import ModelPrice
from service.evaluation import datasets, report, runner, scoring
from service.evaluation.datasets import Problem
from tests.support import refused_port

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --- scoring: summaries -------------------------------------------------------------


def _usage(dec: tuple[int, int, int, float], sol: tuple[int, int, int, float]) -> dict[str, Any]:
    def stage(model: str, v: tuple[int, int, int, float]) -> dict[str, Any]:
        calls, prompt, completion, cost = v
        return {
            "model": model,
            "calls": calls,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "latency_ms": 1.0,
            "cost_usd": cost,
        }

    return {"decomposer": stage("small", dec), "solver": stage("big", sol)}


def _record(
    pid: str,
    mode: str,
    answer: str,
    gold: str,
    subs: list[str],
    gold_subs: list[str] | None,
    latency: float,
    usage: dict[str, Any],
) -> dict[str, Any]:
    return {
        "problem_id": pid,
        "mode": mode,
        "gold_answer": gold,
        "gold_subquestions": gold_subs,
        "error": None,
        "answer": answer,
        "subquestions": subs,
        "usage": usage,
        "latency_ms": latency,
    }


def _static_records() -> list[dict[str, Any]]:
    gold = ["red blue green", "cat dog fish"]
    return [
        # Right answer, exact count, perfect F1.
        _record(
            "1",
            "static",
            "10",
            "10",
            gold,
            gold,
            100.0,
            _usage((1, 50, 10, 0.0), (3, 300, 30, 0.5)),
        ),
        # Wrong answer, one item short, duplicates.
        _record(
            "2",
            "static",
            "9",
            "11",
            ["cat dog fish", "Cat dog fish!"],
            [*gold, "owl bat"],
            200.0,
            _usage((1, 70, 20, 0.0), (3, 100, 10, 0.25)),
        ),
        # Request failed: counts as wrong, not in token or latency figures.
        {
            "problem_id": "3",
            "mode": "static",
            "gold_answer": "5",
            "gold_subquestions": gold,
            "error": "504 upstream_timeout",
            "status": 504,
            "retryable": True,
        },
    ]


def test_summarize_mode() -> None:
    s = scoring.summarize_mode("static", _static_records(), prices={})
    assert (s.problems, s.errors, s.correct) == (3, 1, 1)
    assert s.accuracy == pytest.approx(1 / 3)
    assert s.scored_decompositions == 2
    assert s.count_exact == 0.5  # problem 1 only
    assert s.count_within_one == 1.0  # 2 vs 3 is within one
    assert s.duplicate_rate == 0.5
    # Problem 2: gold side (0 + 1 + 0) / 3, predicted side 1: harmonic mean 0.5.
    assert s.f1 == pytest.approx((1.0 + 0.5) / 2)
    assert (s.mean_subquestions, s.mean_gold_subquestions) == (2.0, 2.5)
    assert (s.decomposer_prompt_tokens, s.decomposer_completion_tokens) == (60.0, 15.0)
    assert (s.solver_prompt_tokens, s.solver_completion_tokens) == (200.0, 20.0)
    assert s.total_tokens == 295.0
    assert (s.decomposer_calls, s.solver_calls) == (1.0, 3.0)
    # No local prices: the service's cost_usd.
    assert s.cost_per_problem_usd == pytest.approx(0.375)
    assert s.cost_per_correct_usd == pytest.approx(0.75)
    assert s.latency_p50_ms == pytest.approx(150.0)
    assert s.latency_p95_ms == pytest.approx(195.0)


def test_local_prices_override_the_services_cost() -> None:
    prices = {"big": ModelPrice(input_per_mtok=1000.0, output_per_mtok=2000.0)}
    s = scoring.summarize_mode("static", _static_records(), prices)
    # Solver priced locally: (300*1000 + 30*2000)/1e6 = 0.36 and (100*1000 + 10*2000)/1e6
    # = 0.12; the unpriced decomposer keeps the service's 0.
    assert s.cost_per_problem_usd == pytest.approx((0.36 + 0.12) / 2)
    assert s.total_cost_usd == pytest.approx(0.48)


def test_direct_and_empty_modes() -> None:
    rec = _record("1", "direct", "4", "5", [], ["a step"], 50.0, _usage((0, 0, 0, 0), (1, 9, 9, 0)))
    s = scoring.summarize_mode("direct", [rec], prices={})
    assert (s.correct, s.accuracy, s.cost_per_correct_usd) == (0, 0.0, None)
    assert s.f1 is None and s.count_exact is None and s.duplicate_rate is None
    empty = scoring.summarize_mode("hinted", [], prices={})
    assert (empty.problems, empty.accuracy, empty.latency_p50_ms) == (0, 0.0, None)


def test_summarize_prefers_success_over_failure() -> None:
    ok, failed = _static_records()[0], {**_static_records()[2], "problem_id": "1"}
    for records in ([ok, failed], [failed, ok]):
        (s,) = scoring.summarize(records, ["static"], prices={})
        assert (s.problems, s.errors, s.correct) == (1, 0, 1)
    (s,) = scoring.summarize([failed, failed], ["static"], prices={})
    assert (s.problems, s.errors) == (1, 1)


# --- reports ------------------------------------------------------------------------


def test_report_table_summary_and_plot(tmp_path: Path) -> None:
    summaries = scoring.summarize(
        [
            *_static_records(),
            _record(
                "1", "direct", "10", "10", [], None, 80.0, _usage((0, 0, 0, 0), (1, 40, 8, 0.1))
            ),
        ],
        ["direct", "static"],
        prices={},
    )
    table = report.markdown_table(summaries).splitlines()
    assert table[0].startswith("| mode | n | accuracy | 95% CI |")
    assert len(table) == 4
    # One problem right of one is 21-100 %, not 100 % flat (Wilson, 95 %).
    assert table[2].startswith("| direct | 1 | 100.0% (1) | 21-100% | 0 | n/a |")
    assert table[3].startswith(
        "| static | 3 | 33.3% (1) | 6-79% | 1 | 2.0 / 2.5 | 50.0% | 100.0% |"
    )
    report.write_summary(tmp_path / "summary.json", summaries, {"dataset": "x"})
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["dataset"] == "x"
    assert [m["mode"] for m in data["summary"]] == ["direct", "static"]
    assert data["summary"][1]["f1"] == pytest.approx(0.75)
    report.plot(tmp_path / "plot.png", summaries, title="t")
    assert (tmp_path / "plot.png").read_bytes().startswith(PNG_SIGNATURE)


@pytest.mark.parametrize(
    ("right", "n", "low", "high"),
    # Published Wilson 95 % intervals (Newcombe 1998, table I; and n = 1000).
    [(5, 5, 0.5655, 1.0), (0, 5, 0.0, 0.4345), (1, 3, 0.0615, 0.7923), (500, 1000, 0.4691, 0.5309)],
)
def test_accuracy_comes_with_its_wilson_interval(
    right: int, n: int, low: float, high: float
) -> None:
    assert scoring.wilson_interval(right, n) == pytest.approx((low, high), abs=5e-4)


# --- runner: resumability -----------------------------------------------------------


def test_read_results_tolerates_a_cut_line(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    good = {"problem_id": "1", "mode": "direct", "error": None}
    path.write_text(json.dumps(good) + "\n\n" + '{"problem_id": "2", "mo', encoding="utf-8")
    assert runner.read_results(path) == [good]
    assert runner.read_results(tmp_path / "none.jsonl") == []


def test_completed_keys() -> None:
    records: list[dict[str, Any]] = [
        {"problem_id": "1", "mode": "direct", "error": None},
        {"problem_id": "2", "mode": "direct", "error": "timeout", "retryable": True},
        {"problem_id": "3", "mode": "direct", "error": "422 too long", "retryable": False},
    ]
    assert runner.completed_keys(records) == {("1", "direct"), ("3", "direct")}


async def test_run_requests_only_what_is_missing(tmp_path: Path) -> None:
    """Done keys are never requested; missing ones are (here: refused, so retryable)."""
    problems = [
        Problem(id=str(i), question=f"What is {i} + 1?", answer=str(i + 1)) for i in range(3)
    ]
    modes = ["direct", "static"]
    path = tmp_path / "results.jsonl"
    done = [
        runner.success_record(
            p,
            m,
            {
                "id": "r",
                "answer": "1",
                "answer_text": "1",
                "subquestions": [],
                "usage": _usage((0, 0, 0, 0), (1, 1, 1, 0)),
                "latency_ms": 1.0,
            },
            1.0,
        )
        for p in problems[:2]
        for m in modes
    ]
    # The interrupted run's last line was cut mid-write.
    path.write_text("".join(json.dumps(r) + "\n" for r in done) + '{"problem_id": "2"', "utf-8")
    with refused_port() as port:  # nothing listens: any request is an error
        url = f"http://127.0.0.1:{port}"

        stats = await runner.run(problems[:2], modes, url=url, results_path=path, progress=False)
        assert (stats.total, stats.skipped, stats.requested, stats.errors) == (4, 4, 0, 0)

        stats = await runner.run(problems, modes, url=url, results_path=path, progress=False)
        assert (stats.total, stats.skipped, stats.requested, stats.errors) == (6, 4, 2, 2)
        records = runner.read_results(path)
        assert records[:4] == done
        new = records[4:]
        assert {(r["problem_id"], r["mode"]) for r in new} == {("2", "direct"), ("2", "static")}
        assert all(r["error"] and r["retryable"] and r["status"] is None for r in new)

        # Failed requests are retried by the next run, done ones still are not.
        stats = await runner.run(problems, modes, url=url, results_path=path, progress=False)
        assert (stats.skipped, stats.requested) == (4, 2)


# --- the command line, for real -----------------------------------------------------


def _eval(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", "eval", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=1200,
    )


def test_eval_help_and_bad_modes() -> None:
    help_ = _eval("--help")
    assert help_.returncode == 0, help_.stderr
    for option in ("--dataset", "--format", "--limit", "--seed", "--modes", "--url", "--out"):
        assert option in help_.stdout
    with refused_port() as port:
        bad = _eval("--modes", "direct,telepathy", "--url", f"http://127.0.0.1:{port}")
    assert bad.returncode != 0
    assert "telepathy" in bad.stderr


@pytest.mark.slow
def test_eval_against_live_service_and_resume(service_url: str, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    results = out / "results.jsonl"
    common = ["--url", service_url, "--modes", "direct,hinted", "--out", str(out)]
    common += ["--concurrency", "2"]

    first = _eval(*common, "--limit", "2")
    assert first.returncode == 0, first.stderr[-4000:]
    lines = results.read_text().splitlines()
    assert len(lines) == 4

    # "Interrupted" after two problems: a third one only requests the missing keys.
    second = _eval(*common, "--limit", "3")
    assert second.returncode == 0, second.stderr[-4000:]
    lines2 = results.read_text().splitlines()
    assert lines2[:4] == lines
    # The default dataset is the held-out part of the shipped one (never trained on).
    trained = datasets.training_questions()
    held_out = datasets.never_seen(datasets.load(datasets.DEFAULT_DATASET), trained)
    third_id = datasets.select(held_out.problems, 3, None)[2].id
    assert datasets.overlap(datasets.select(held_out.problems, 3, None), trained) == 0
    new = [json.loads(line) for line in lines2[4:]]
    assert sorted((r["problem_id"], r["mode"]) for r in new) == [
        (third_id, "direct"),
        (third_id, "hinted"),
    ]
    records = [json.loads(line) for line in lines2]
    assert all(r["error"] is None for r in records)

    table = second.stdout.splitlines()
    assert table[0].startswith("| mode | n | accuracy |")
    assert table[2].startswith("| direct | 3 |") and table[3].startswith("| hinted | 3 |")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["problems"] == 3 and summary["format"] == "socratic"
    direct, hinted = summary["summary"]
    for mode, s in (("direct", direct), ("hinted", hinted)):
        recs = [r for r in records if r["mode"] == mode]
        assert s["mode"] == mode and s["problems"] == 3 and s["errors"] == 0
        correct = sum(scoring.answer_correct(r["answer"], r["gold_answer"]) for r in recs)
        assert s["correct"] == correct and s["accuracy"] == pytest.approx(correct / 3)
        assert s["solver_calls"] == 1.0
        assert s["solver_completion_tokens"] > 0
        service_cost = [
            r["usage"]["decomposer"]["cost_usd"] + r["usage"]["solver"]["cost_usd"] for r in recs
        ]
        assert s["cost_per_problem_usd"] == pytest.approx(sum(service_cost) / 3)
        latencies = sorted(r["latency_ms"] for r in recs)
        assert s["latency_p50_ms"] == pytest.approx(latencies[1])
    assert direct["decomposer_calls"] == 0.0 and direct["f1"] is None
    assert "| n/a |" in table[2]
    assert hinted["decomposer_calls"] == 1.0
    assert hinted["scored_decompositions"] == 3
    assert 0.0 <= hinted["f1"] <= 1.0
    assert (out / "plot.png").read_bytes().startswith(PNG_SIGNATURE)

    # Resumed with nothing left: no request, same file; prices configured here apply.
    solver_model = records[0]["usage"]["solver"]["model"]
    prices = {solver_model: {"input_per_mtok": 1000.0, "output_per_mtok": 0.0}}
    third = _eval(*common, "--limit", "3", env={"DIVCONQ_PRICES": json.dumps(prices)})
    assert third.returncode == 0, third.stderr[-4000:]
    assert results.read_text().splitlines() == lines2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["requested"] == 0 and summary["run"]["skipped"] == 6
    direct = summary["summary"][0]
    direct_prompt = [
        r["usage"]["solver"]["prompt_tokens"] for r in records if r["mode"] == "direct"
    ]
    assert direct["cost_per_problem_usd"] == pytest.approx(sum(direct_prompt) * 1000 / 1e6 / 3)


def test_eval_defaults_to_problems_the_shipped_adapter_never_saw(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from service.evaluation.cli import _eval_problems

    trained = datasets.training_questions()
    assert len(trained) == 847  # socratic_1000 less its 150 held out and 3 few-shot lines
    defaults = argparse.Namespace(dataset=None, format="auto", limit=None, seed=None, concurrency=1)
    _, problems = _eval_problems(defaults)
    assert len(problems) == 150 and datasets.overlap(problems, trained) == 0
    assert capsys.readouterr().err == ""
    given = argparse.Namespace(**{**vars(defaults), "dataset": str(datasets.DEFAULT_DATASET)})
    _, problems = _eval_problems(given)
    assert len(problems) == 997
    assert "warning: 847 of 997 problems" in capsys.readouterr().err
