"""Scoring: pure functions from results to numbers. No I/O, no network.

- Answers: numeric match with a small tolerance when the gold answer is a
  number; else exact match after SQuAD-style normalization.
- Decomposition quality against gold subquestions: count exact / within one,
  best-match token F1 (defined in ``decomposition_f1``), duplicate rate.
- Cost, tokens, calls and latency percentiles per mode (``summarize``).

A result record is one line of ``results.jsonl`` (see ``runner``): a dict
with at least ``problem_id``, ``mode``, ``gold_answer`` and either ``error``
or the ``/solve`` fields ``answer``, ``subquestions``, ``usage`` and ``latency_ms``.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from service.core.settings import ModelPrice

# Float noise ("2.50" vs "2.5", 0.1 + 0.2), not leniency: GSM8K answers are exact.
ABS_TOL = 1e-4
REL_TOL = 1e-6
# Two predicted subquestions this similar ask the same thing in other words.
NEAR_DUPLICATE_F1 = 0.9
DECOMPOSING_MODES = frozenset({"static", "hinted", "socratic"})
STAGES = ("decomposer", "solver")

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?|-?\.\d+")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


# --- answers ----------------------------------------------------------------------


def _parse_number(token: str) -> float | None:
    token = token.replace(",", "").replace(" ", "")
    try:
        if "/" in token:
            num, den = token.split("/", 1)
            return float(num) / float(den) if float(den) else None
        return float(token)
    except ValueError:
        return None


def to_number(text: str) -> float | None:
    """``text`` as a number if it is one: currency, thousands separators, %, units allowed."""
    cleaned = text.strip().replace("$", "").replace("%", "").rstrip(".").strip()
    value = _parse_number(cleaned)
    if value is not None:
        return value
    # "18 dollars", "x = 18": the service already extracts numbers, so a
    # non-bare answer is matched by its last number (where models restate it).
    numbers = _NUMBER.findall(cleaned)
    return _parse_number(numbers[-1]) if numbers else None


def normalize_text(text: str) -> str:
    """SQuAD-style: lower case, no punctuation, no articles, single spaces."""
    text = text.lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def numbers_match(pred: float, gold: float) -> bool:
    return math.isclose(pred, gold, rel_tol=REL_TOL, abs_tol=ABS_TOL)


def answer_correct(pred: str, gold: str) -> bool:
    """Numeric match within tolerance when gold is a number; else normalized exact match."""
    gold_num = _parse_number(gold.strip().replace("$", "").replace("%", ""))
    if gold_num is not None:
        pred_num = to_number(pred)
        return pred_num is not None and numbers_match(pred_num, gold_num)
    return bool(normalize_text(gold)) and normalize_text(pred) == normalize_text(gold)


# --- decomposition quality -----------------------------------------------------------


def tokens(text: str) -> list[str]:
    return normalize_text(text).split()


def token_f1(a: str, b: str) -> float:
    """SQuAD token F1 between two strings (bag of normalized tokens)."""
    ta, tb = tokens(a), tokens(b)
    if not ta or not tb:
        return float(ta == tb)
    overlap = sum((Counter(ta) & Counter(tb)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(tb), overlap / len(ta)
    return 2 * precision * recall / (precision + recall)


def _mean_best(side: Sequence[str], other: Sequence[str]) -> float:
    return sum(max(token_f1(x, y) for y in other) for x in side) / len(side)


def decomposition_f1(gold: Sequence[str], pred: Sequence[str]) -> float | None:
    """Best-match token F1 of a predicted decomposition against the gold one.

    - gold side G = mean over gold items of the best ``token_f1`` with any
      predicted item (recall-like: is every gold step asked?);
    - predicted side P = mean over predicted items of the best ``token_f1``
      with any gold item (precision-like: is every question asked needed?);
    - result = harmonic mean 2GP / (G + P), 0 when G + P = 0.

    No predictions against a non-empty gold: 0. No gold items: None (not
    scored, whatever was predicted).
    """
    if not gold:
        return None
    if not pred:
        return 0.0
    g, p = _mean_best(gold, pred), _mean_best(pred, gold)
    return 0.0 if g + p == 0 else 2 * g * p / (g + p)


def has_duplicate(pred: Sequence[str], threshold: float = NEAR_DUPLICATE_F1) -> bool:
    """Whether two predicted items repeat each other.

    The service already drops exact repeats after normalization, so this also
    counts near-duplicates: two items whose ``token_f1`` is at least
    ``threshold`` (e.g. "How many eggs does she sell?" / "How many eggs does
    she sell daily?").
    """
    normalized = [normalize_text(q) for q in pred]
    for i in range(len(pred)):
        for j in range(i + 1, len(pred)):
            if normalized[i] == normalized[j] or token_f1(pred[i], pred[j]) >= threshold:
                return True
    return False


# --- aggregation ---------------------------------------------------------------------


def percentile(values: Iterable[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100), linear interpolation between ranks; None if empty."""
    ordered = sorted(values)
    if not ordered:
        return None
    if not 0 <= q <= 100:
        raise ValueError("q must be within 0..100")
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def record_cost(record: Mapping[str, Any], prices: Mapping[str, ModelPrice]) -> float:
    """A result's cost in USD.

    A stage whose model has a price configured where the eval runs
    (``DIVCONQ_PRICES``) is priced from its tokens; else the service's own
    ``cost_usd`` is used, so a run against a remote service can be priced
    after the fact.
    """
    total = 0.0
    for stage in STAGES:
        usage = record["usage"][stage]
        price = prices.get(usage["model"])
        if price is not None:
            total += price.cost_usd(usage["prompt_tokens"], usage["completion_tokens"])
        else:
            total += float(usage.get("cost_usd", 0.0))
    return total


@dataclass
class ModeSummary:
    """One mode's scores. None = not applicable (no data, or no gold)."""

    mode: str
    problems: int
    errors: int
    correct: int
    accuracy: float
    # Decomposition quality, over problems with gold subquestions.
    scored_decompositions: int
    count_exact: float | None
    count_within_one: float | None
    f1: float | None
    duplicate_rate: float | None
    mean_subquestions: float | None
    mean_gold_subquestions: float | None
    # Per problem (successful requests).
    decomposer_prompt_tokens: float | None
    decomposer_completion_tokens: float | None
    solver_prompt_tokens: float | None
    solver_completion_tokens: float | None
    total_tokens: float | None
    decomposer_calls: float | None
    solver_calls: float | None
    cost_per_problem_usd: float | None
    cost_per_correct_usd: float | None
    total_cost_usd: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    # The 95 % Wilson interval of ``accuracy``: 5 problems are not read like 1,000.
    accuracy_low: float = 0.0
    accuracy_high: float = 1.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95 % at the default ``z``).

    Unlike the normal approximation it stays inside [0, 1] and is honest at
    small n and at 0 % or 100 %: 5 of 5 right is 57-100 %, not 100 % flat.
    """
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def summarize_mode(
    mode: str, records: Sequence[Mapping[str, Any]], prices: Mapping[str, ModelPrice]
) -> ModeSummary:
    """Scores for one mode's records (one per problem; failed requests count as wrong)."""
    ok = [r for r in records if not r.get("error")]
    correct = sum(answer_correct(str(r["answer"]), str(r["gold_answer"])) for r in ok)

    scored = []
    if mode in DECOMPOSING_MODES:
        scored = [r for r in ok if r.get("gold_subquestions")]
    golds = [list(r["gold_subquestions"]) for r in scored]
    preds = [list(r["subquestions"]) for r in scored]
    n_dec = len(scored)

    def share(flags: Iterable[bool]) -> float | None:
        return sum(flags) / n_dec if n_dec else None

    f1s = [decomposition_f1(g, p) for g, p in zip(golds, preds, strict=True)]

    def per_problem(stage: str, field: str) -> float | None:
        return _mean([float(r["usage"][stage][field]) for r in ok])

    costs = [record_cost(r, prices) for r in ok]
    total_cost = sum(costs)
    latencies = [float(r["latency_ms"]) for r in ok]
    stage_tokens = [
        per_problem(s, f) for s in STAGES for f in ("prompt_tokens", "completion_tokens")
    ]
    return ModeSummary(
        mode=mode,
        problems=len(records),
        errors=len(records) - len(ok),
        correct=correct,
        accuracy=correct / len(records) if records else 0.0,
        accuracy_low=wilson_interval(correct, len(records))[0],
        accuracy_high=wilson_interval(correct, len(records))[1],
        scored_decompositions=n_dec,
        count_exact=share(len(p) == len(g) for g, p in zip(golds, preds, strict=True)),
        count_within_one=share(
            abs(len(p) - len(g)) <= 1 for g, p in zip(golds, preds, strict=True)
        ),
        f1=_mean([f for f in f1s if f is not None]) if n_dec else None,
        duplicate_rate=share(has_duplicate(p) for p in preds),
        mean_subquestions=_mean([float(len(p)) for p in preds]) if n_dec else None,
        mean_gold_subquestions=_mean([float(len(g)) for g in golds]) if n_dec else None,
        decomposer_prompt_tokens=stage_tokens[0],
        decomposer_completion_tokens=stage_tokens[1],
        solver_prompt_tokens=stage_tokens[2],
        solver_completion_tokens=stage_tokens[3],
        total_tokens=(sum(t for t in stage_tokens if t is not None) if ok else None),
        decomposer_calls=per_problem("decomposer", "calls"),
        solver_calls=per_problem("solver", "calls"),
        cost_per_problem_usd=_mean(costs),
        cost_per_correct_usd=total_cost / correct if correct else None,
        total_cost_usd=total_cost,
        latency_p50_ms=percentile(latencies, 50),
        latency_p95_ms=percentile(latencies, 95),
    )


def summarize(
    records: Iterable[Mapping[str, Any]],
    modes: Sequence[str],
    prices: Mapping[str, ModelPrice],
) -> list[ModeSummary]:
    """One summary per mode, in the order given.

    A key (problem, mode) may have several records after resumed runs: a
    success wins over failures, and among equals the last one wins.
    """
    latest: dict[tuple[str, str], Mapping[str, Any]] = {}
    for rec in records:
        key = (str(rec["problem_id"]), str(rec["mode"]))
        if not rec.get("error") or latest.get(key, rec).get("error"):
            latest[key] = rec
    return [
        summarize_mode(mode, [r for (_, m), r in latest.items() if m == mode], prices)
        for mode in modes
    ]
