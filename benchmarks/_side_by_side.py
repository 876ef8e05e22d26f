"""Configurations of the service measured side by side on one stub model, for
``_tracing_cost.py`` and ``_features_cost.py`` (not a benchmark itself).

The services are started together and measured in alternating rounds at one
client, so drift on a shared machine hits every configuration alike (with
``fresh``, they are restarted every round). A configuration's figure is the
median of its rounds' p50s (one noisy round moves it least); what one
configuration adds is its figure minus another's. Latency is also compared
round by round (``latency_p50_added_paired_ms``): the median over rounds of
new - old within each round, with its range. A round measures every
configuration back to back, so what drifts between rounds (the machine, a
fresh process's luck) cancels in the within-round difference: the estimator
of a blocked design, less noisy than the difference of two medians.

With the paired figure comes an interval for it (``median_ci``) and, against a
target, a verdict (``verdict``): met only when the whole interval is at or
under the target, not met only when it is all over, undecided otherwise. One
lucky round order can put the paired figure under a target that the run as a
whole cannot tell from it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from _bench import Server, table, wait_http

MODES = ("direct", "static")
# The least confidence an interval for a median over rounds is given with.
CI_LEVEL = 0.9
# Every figure a row of ``overhead.py``'s ``summarise`` has that a comparison reads.
ADDED = {
    "latency_p50_added_ms": "latency_p50_ms",
    "server_p50_added_ms": "overhead_server_p50_ms",
    "client_p50_added_ms": "overhead_client_p50_ms",
    "cpu_ms_per_request_added": "cpu_ms_per_request",
}


def rounds(
    start: Callable[[], dict[str, Server]],
    count: int,
    measure: Callable[[Server, str], dict[str, Any]],
    fresh: bool = False,
    together: Callable[[dict[str, Server], str, int], dict[str, dict[str, Any]]] | None = None,
    modes: Sequence[str] = MODES,
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """``count`` rounds of each mode on each configuration's service (``start``
    starts them; they are stopped after); the rows per (configuration, mode).

    Each round begins with a different configuration, so none is always the one
    measured first. ``fresh``: new service processes every round. A process's
    own luck (its memory layout, which core it lands on) can make one
    configuration 0.2-0.3 ms slower for a whole run on this kind of machine;
    fresh processes turn that into noise that the median over rounds absorbs.

    ``together`` (services, mode, round) measures every configuration in one
    go, a row each: an interleaved client (``overhead.measure_interleaved``),
    taking turns request by request. Measured one after another, a round's
    configurations meet whatever the machine does in their own seconds only
    (two identical services came out up to 2 ms apart at ``static``'s p50);
    interleaved, every step of the round reaches them all (0.1 ms).

    ``modes``: the request modes measured each round (by default both).
    """
    samples: dict[tuple[str, str], list[dict[str, Any]]] = {}
    services: dict[str, Server] = {}
    try:
        for i in range(count):
            if fresh or not services:
                for s in reversed(services.values()):
                    s.stop()
                services = start()
                for s in services.values():
                    wait_http(f"{s.url}/readyz", proc=s.proc)
            order = list(services.items())
            order = order[i % len(order) :] + order[: i % len(order)]
            for mode in modes:
                if together is not None:
                    for config, row in together(dict(order), mode, i).items():
                        samples.setdefault((config, mode), []).append(row)
                    continue
                for config, s in order:
                    samples.setdefault((config, mode), []).append(measure(s, mode))
    finally:
        for s in reversed(services.values()):
            s.stop()
    return samples


def median_ci(
    values: Sequence[float], level: float = CI_LEVEL
) -> tuple[float, float, float] | None:
    """A distribution-free interval for the median of ``values``: ``(low, high,
    confidence)``, from order statistics, the narrowest pair ``(k-th smallest,
    k-th largest)`` whose confidence (from the binomial distribution: each value
    falls either side of the median with probability 1/2) is at least ``level``.
    None when even ``(min, max)`` falls short (fewer than 5 values for 0.9).

    Eleven rounds give the 3rd and 9th values (93.5 %), five give min and max
    (93.75 %). It assumes only that the rounds are independent.
    """
    n = len(values)
    ordered = sorted(values)
    found = None
    for k in range(1, n // 2 + 1):
        outside = 2 * sum(math.comb(n, i) for i in range(k)) / 2**n
        if 1 - outside < level:
            break
        found = (ordered[k - 1], ordered[n - k], 1 - outside)
    return found


def paired(diffs: Sequence[float]) -> dict[str, Any]:
    """The paired figure of within-round differences (new - old, one per round): their
    median, range and interval (``median_ci``), as ``added_rows`` reports them."""
    interval = median_ci(diffs)
    return {
        "latency_p50_added_paired_ms": round(_p50(list(diffs)), 3),
        "paired_range_ms": f"{min(diffs):.2f}..{max(diffs):.2f}",
        "paired_ci_ms": (
            f"{interval[0]:.2f}..{interval[1]:.2f} ({interval[2]:.1%})" if interval else None
        ),
        # The same, as numbers, for the JSON and ``verdict`` (not printed).
        "paired_ci": [round(x, 3) for x in interval] if interval else None,
    }


def verdict(interval: Sequence[float] | None, target: float) -> str:
    """``met`` (the whole interval at or under ``target``), ``not met`` (all of it
    over), or ``undecided`` (it straddles the target, or there is none)."""
    if interval is None:
        return "undecided"
    low, high = interval[0], interval[1]
    if high <= target:
        return "met"
    return "not met" if low > target else "undecided"


def _p50(values: list[float]) -> float:
    values = sorted(values)
    return values[len(values) // 2] if values else float("nan")


def median_rows(
    samples: dict[tuple[str, str], list[dict[str, Any]]], label: str, medians: Sequence[str]
) -> list[dict[str, Any]]:
    """One row per (configuration, mode): the requests and errors of all rounds, and
    the median over the rounds of each figure in ``medians``."""
    return [
        {
            label: config,
            "mode": mode,
            "requests": sum(r["requests"] for r in got),
            "errors": sum(r["errors"] for r in got),
            **{k: round(_p50([r[k] for r in got]), 3) for k in medians},
        }
        for (config, mode), got in samples.items()
    ]


def added_rows(
    rows: list[dict[str, Any]],
    label: str,
    pairs: Sequence[tuple[str, str]],
    samples: dict[tuple[str, str], list[dict[str, Any]]] | None = None,
) -> list[dict[str, Any]]:
    """``new - old`` per mode of each figure in ``ADDED`` the rows have, for the pairs
    measured; with ``samples``, the latency's round-by-round difference too."""
    by = {(r[label], r["mode"]): r for r in rows}
    added = []
    for mode in MODES:
        for new, old in pairs:
            if (new, mode) not in by or (old, mode) not in by:
                continue
            a, b = by[(new, mode)], by[(old, mode)]
            row = {
                "compare": f"{new} - {old}",
                "mode": mode,
                **{f: round(a[k] - b[k], 3) for f, k in ADDED.items() if k in a},
            }
            if samples is not None:
                diffs = [
                    x["latency_p50_ms"] - y["latency_p50_ms"]
                    for x, y in zip(samples[(new, mode)], samples[(old, mode)], strict=True)
                ]
                row |= paired(diffs)
            added.append(row)
    return added


def compare(
    title: str,
    samples: dict[tuple[str, str], list[dict[str, Any]]],
    label: str,
    medians: Sequence[str],
    pairs: Sequence[tuple[str, str]],
) -> dict[str, Any]:
    """``median_rows`` and ``added_rows`` of the samples, printed as two tables, and
    each round's latency p50 per configuration and mode."""
    rows = median_rows(samples, label, medians)
    added = added_rows(rows, label, pairs, samples)
    print(f"\n{title}, one client (median of the rounds' p50s, ms):")
    print(table(rows, list(rows[0])))
    print(table(added, [k for k in added[0] if k != "paired_ci"]))
    per_round = {
        f"{config}/{mode}": [r["latency_p50_ms"] for r in got]
        for (config, mode), got in samples.items()
    }
    return {"rows": rows, "added": added, "latency_p50_ms_by_round": per_round}
