"""Pool the rounds of several ``overhead.py`` tracing runs: one interval where one run is too wide.

One run of ``overhead.py --tracing-rounds 21`` judges tracing's cost on its
paired figure: the median over rounds of each round's on - off difference,
with an interval for it (``_side_by_side.median_ci``). Runs of one request
path have put that figure anywhere in 0.28-0.41 ms at ``static``, each
with an interval about 0.2 ms wide, so one run can leave a 0.3 ms target
undecided or call it either way.

Each round's difference was taken side by side within that round (an
interleaved client, fresh processes), so the rounds of several runs can be
pooled: their median, with the same distribution-free interval, over all of
their rounds. That assumes the runs measured the same thing:

- **one kind of machine**: runs whose CPU (model, family and model number,
  the flags the result file names) differs are refused;
- **one mode and one stub delay**: also checked;
- **one request path**: the result files name the commit measured
  (``machine.git``, since that was recorded) and it is printed beside each
  run, with how many services shared its rounds (more make each one's
  caches colder); which runs measure the same thing is for the reader to
  say.

    python benchmarks/pooled.py benchmarks/results/overhead_tracing_static_epyc_*.json

For each comparison the files have (``on - off``, ``on-sampled - off``,
``off-again - off``, ...) it prints one row per run and the pooled row, with
the verdict against the target (``_tracing_cost.TARGET_ADDED_P50_MS``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from _bench import arguments, table, write_json
from _side_by_side import paired, verdict
from _tracing_cost import PAIRS, TARGET_ADDED_P50_MS

# What tracing costs, judged against the target as overhead.py judges on - off; the
# other comparisons (the noise floor, two versions) get no verdict.
JUDGED = frozenset({("on", "off"), ("on-sampled", "off")})
# The key in a run's ``tracing`` section that says what a configuration measured.
DETAIL = {"on-sampled": "ratio", "on-earlier": "compare", "before": "baseline"}


def _machine_kind(report: dict[str, Any]) -> tuple[str, str, str]:
    info = report.get("machine", {})
    generation = info.get("cpu_generation", {})
    return (
        str(info.get("cpu")),
        f"family {generation.get('cpu family')} model {generation.get('model')}",
        str(info.get("cpu_flags")),
    )


def load(paths: list[Path], mode: str) -> list[tuple[Path, dict[str, Any]]]:
    """The result files, checked to be runs on one kind of machine, of ``mode``, at one
    stub delay (``SystemExit`` says which differs)."""
    runs = []
    for path in paths:
        report = json.loads(path.read_text())
        tracing = report.get("tracing")
        if not tracing or "latency_p50_ms_by_round" not in tracing:
            raise SystemExit(f"{path}: no tracing rounds (an overhead.py --tracing-rounds run?)")
        if mode not in tracing.get("modes", []):
            raise SystemExit(f"{path}: no {mode} rounds (modes: {tracing.get('modes')})")
        runs.append((path, report))
    kinds = {_machine_kind(r) for _, r in runs}
    if len(kinds) > 1:
        listed = "; ".join(f"{p.name}: {', '.join(_machine_kind(r))}" for p, r in runs)
        raise SystemExit(f"runs on different machines cannot be pooled: {listed}")
    delays = {r["tracing"].get("delay_s") for _, r in runs}
    if len(delays) > 1:
        raise SystemExit(f"runs with different stub delays cannot be pooled: {sorted(delays)}")
    return runs


def differences(tracing: dict[str, Any], new: str, old: str, mode: str) -> list[float] | None:
    """One run's within-round differences ``new - old`` at ``mode``; None when the run
    did not measure both."""
    by_round = tracing["latency_p50_ms_by_round"]
    a, b = by_round.get(f"{new}/{mode}"), by_round.get(f"{old}/{mode}")
    if a is None or b is None:
        return None
    return [x - y for x, y in zip(a, b, strict=True)]


def _compare(tracing: dict[str, Any], new: str, old: str) -> str:
    """``new - old``, each configuration with what names it beyond its label (the
    sampling ratio, the commit compared with): runs that differ there measured
    different things and are pooled apart ("?" where a run did not record it)."""
    named = []
    for config in (new, old):
        key = DETAIL.get(config)
        named.append(f"{config} ({key} {tracing.get(key, '?')})" if key else config)
    return " - ".join(named)


def pool(runs: list[tuple[Path, dict[str, Any]]], mode: str, target: float) -> list[dict[str, Any]]:
    """For each comparison, a row per run that measured it and, where two or more
    did, the pooled row."""
    groups: dict[str, list[tuple[str, dict[str, Any], list[float]]]] = {}
    judged: set[str] = set()
    for new, old in PAIRS:
        for path, report in runs:
            diffs = differences(report["tracing"], new, old, mode)
            if diffs is None:
                continue
            compare = _compare(report["tracing"], new, old)
            groups.setdefault(compare, []).append((path.name, report, diffs))
            if (new, old) in JUDGED:
                judged.add(compare)
    rows: list[dict[str, Any]] = []
    for compare, measured in groups.items():
        goal = target if compare in judged else None
        for name, report, diffs in measured:
            rows.append(_row(compare, name, report, diffs, goal))
        if len(measured) > 1:
            pooled = [d for _, _, diffs in measured for d in diffs]
            rows.append(_row(compare, f"pooled ({len(measured)} runs)", None, pooled, goal))
    return rows


def _row(
    compare: str,
    run: str,
    report: dict[str, Any] | None,
    diffs: list[float],
    target: float | None,
) -> dict[str, Any]:
    figure = paired(diffs)
    info = report["machine"] if report else {}
    return {
        "compare": compare,
        "run": run,
        "git": info.get("git") or "",
        "date_utc": info.get("date_utc", ""),
        # How many services shared each round: more make each one's caches colder.
        "services": _services(report) if report else "",
        "rounds": len(diffs),
        **figure,
        "verdict": verdict(figure["paired_ci"], target) if target is not None else "",
    }


def _services(report: dict[str, Any]) -> int:
    by_round = report["tracing"]["latency_p50_ms_by_round"]
    return len({key.split("/")[0] for key in by_round})


def main(argv: list[str] | None = None) -> None:
    parser = arguments(__doc__)
    parser.add_argument("files", nargs="+", type=Path, help="overhead.py result files (JSON)")
    parser.add_argument("--mode", default="static", help="the mode's rounds to pool")
    parser.add_argument("--target", type=float, default=TARGET_ADDED_P50_MS, help="ms p50")
    parser.add_argument("--out", help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    runs = load(args.files, args.mode)
    rows = pool(runs, args.mode, args.target)
    kind = ", ".join(_machine_kind(runs[0][1]))
    print(f"{args.mode}, p50 added per round (ms), {len(runs)} runs on {kind}:")
    print(table(rows, [k for k in rows[0] if k != "paired_ci"]))
    if args.out:
        write_json(args.out, {"mode": args.mode, "target_ms": args.target, "rows": rows})


if __name__ == "__main__":
    main()
