"""Reporting: the markdown table (stdout), the JSON summary and the PNG plot.

Accuracy comes with its 95 % Wilson interval, a column in the table and an
error bar in the plot, so that 5 problems are not read like 1,000.
The plot shows accuracy against cost per problem, one point per mode. When no
prices are configured every cost is 0 and that axis says nothing, so it falls
back to tokens per problem (and says so on the axis label).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from service.evaluation.scoring import ModeSummary

_COLUMNS = (
    ("mode", "left"),
    ("n", "right"),
    ("accuracy", "right"),
    ("95% CI", "right"),
    ("errors", "right"),
    ("subq / gold", "right"),
    ("count =", "right"),
    ("count ±1", "right"),
    ("F1", "right"),
    ("dup", "right"),
    ("decomposer tok", "right"),
    ("solver tok", "right"),
    ("solver calls", "right"),
    ("$ / problem", "right"),
    ("$ / correct", "right"),
    ("p50 s", "right"),
    ("p95 s", "right"),
)
NA = "n/a"


def _num(value: float | None, fmt: str) -> str:
    return NA if value is None else format(value, fmt)


def _pct(value: float | None) -> str:
    return NA if value is None else f"{100 * value:.1f}%"


def _money(value: float | None) -> str:
    if value is None:
        return NA
    return "$0" if value == 0 else f"${value:.3g}"


def _tokens(prompt: float | None, completion: float | None) -> str:
    # "in + out": the two are priced differently.
    if prompt is None or completion is None:
        return NA
    return f"{prompt:.0f} + {completion:.0f}"


def _seconds(ms: float | None) -> str:
    return NA if ms is None else f"{ms / 1000:.1f}"


def _row(s: ModeSummary) -> list[str]:
    subq = (
        NA
        if s.mean_subquestions is None or s.mean_gold_subquestions is None
        else f"{s.mean_subquestions:.1f} / {s.mean_gold_subquestions:.1f}"
    )
    return [
        s.mode,
        str(s.problems),
        f"{100 * s.accuracy:.1f}% ({s.correct})",
        f"{100 * s.accuracy_low:.0f}-{100 * s.accuracy_high:.0f}%",
        str(s.errors),
        subq,
        _pct(s.count_exact),
        _pct(s.count_within_one),
        _num(s.f1, ".3f"),
        _pct(s.duplicate_rate),
        _tokens(s.decomposer_prompt_tokens, s.decomposer_completion_tokens),
        _tokens(s.solver_prompt_tokens, s.solver_completion_tokens),
        _num(s.solver_calls, ".2f"),
        _money(s.cost_per_problem_usd),
        _money(s.cost_per_correct_usd),
        _seconds(s.latency_p50_ms),
        _seconds(s.latency_p95_ms),
    ]


def markdown_table(summaries: Sequence[ModeSummary]) -> str:
    """One row per mode; tokens are per problem, as prompt + completion."""
    header = [name for name, _ in _COLUMNS]
    rule = [":---" if align == "left" else "---:" for _, align in _COLUMNS]
    lines = [header, rule, *(_row(s) for s in summaries)]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines) + "\n"


def write_summary(path: Path, summaries: Sequence[ModeSummary], meta: dict[str, Any]) -> None:
    payload = {**meta, "summary": [s.as_dict() for s in summaries]}
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def plot(path: Path, summaries: Sequence[ModeSummary], title: str = "") -> None:
    """Accuracy against cost per problem (or tokens, with no prices), one point per mode."""
    # The object API with the Agg canvas: no pyplot global state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = [s for s in summaries if s.cost_per_problem_usd is not None]
    priced = any((s.cost_per_problem_usd or 0) > 0 for s in points)
    fig = Figure(figsize=(6.4, 4.4), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for s in points:
        x = (s.cost_per_problem_usd if priced else s.total_tokens) or 0.0
        y = 100 * s.accuracy
        # The 95 % Wilson interval as an error bar: a few problems are a wide bar.
        below, above = y - 100 * s.accuracy_low, 100 * s.accuracy_high - y
        ax.errorbar([x], [y], yerr=[[below], [above]], fmt="o", markersize=7, capsize=4)
        ax.annotate(s.mode, (x, 100 * s.accuracy), xytext=(6, 4), textcoords="offset points")
    ax.set_xlabel(
        "cost per problem (USD)" if priced else "tokens per problem (no prices configured)"
    )
    ax.set_ylabel("accuracy (%, bars: 95% Wilson interval)")
    ax.set_ylim(-2, 102)
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="png")
