"""Subquestions per problem against the steps each SVAMP-style problem needs.

A step is one operator of the problem's ``Equation`` (SVAMP's convention).
Reads the ``results.jsonl`` that ``python -m service eval`` wrote for each
directory given and prints one markdown row per directory:

    python data/svamp_style/count_check.py /tmp/svamp_none /tmp/svamp_gsm8k-socratic
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

PROBLEMS = Path(__file__).with_name("problems.json")


def steps(equation: str) -> int:
    return sum(equation.split().count(op) for op in "+-*/")


def main(dirs: list[str]) -> int:
    need = {p["ID"]: steps(p["Equation"]) for p in json.loads(PROBLEMS.read_text())}
    print("| run | problems | steps (mean) | subquestions (mean) | count = steps | within one |")
    print("|---|---|---|---|---|---|")
    for d in dirs:
        rows = [json.loads(line) for line in (Path(d) / "results.jsonl").read_text().splitlines()]
        pairs = [(need[r["problem_id"]], len(r["subquestions"] or [])) for r in rows]
        print(
            f"| {Path(d).name} | {len(pairs)} | {statistics.mean(s for s, _ in pairs):.2f} | "
            f"{statistics.mean(n for _, n in pairs):.2f} | "
            f"{sum(s == n for s, n in pairs) / len(pairs):.0%} | "
            f"{sum(abs(s - n) <= 1 for s, n in pairs) / len(pairs):.0%} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
