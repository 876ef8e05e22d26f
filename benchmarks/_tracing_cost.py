"""What tracing costs a request, for ``benchmarks/overhead.py``: off vs on, side by side.

Services started together on one stub model (its own, with a short delay so a
one-client loop makes many requests), measured in alternating rounds at one
client so drift on a shared machine hits every configuration alike:

- ``off``: no ``OTEL_*`` variables (``OTEL_TRACES_EXPORTER=none`` to be sure);
- ``on``: ``OTEL_EXPORTER_OTLP_ENDPOINT`` at the stub's ``/v1/traces`` sink,
  OTLP/HTTP, the SDK's batch processor with its defaults, sampling everything;
- ``before`` (with ``--tracing-baseline REF``): the service as of ``REF``
  (``git archive``), from before tracing existed: what ``off`` is compared with;
- ``on-sampled`` (with ``--tracing-ratio R``): ``on`` with
  ``OTEL_TRACES_SAMPLER=parentbased_traceidratio`` at ``R`` (``0``: no request
  sampled, so nothing is recorded or exported: what the plumbing alone costs);
- ``on-earlier`` (with ``--tracing-compare REF``): ``on`` with the service as
  of ``REF``: an earlier tracing implementation, side by side with this one;
- ``off-again`` (with ``--tracing-aa``): a second ``off``: off-again - off is
  what two identical services differ by, the run's noise floor.

Within a round one client takes turns between the services request by
request (``overhead.measure_interleaved``: a shuffled order each step), so
what the machine does during the round reaches every configuration alike;
``--tracing-sequential`` measures them one after another instead (each for
``duration_s``), as earlier runs did. Interleaved, a round lasts
``duration_s`` in all, shared by the configurations. Each service is idle
while the others answer: its caches are as cold as a service's with
occasional callers, which costs tracing's code more than a back-to-back loop
on one service does.

Each round gives p50s of the latency and of the overheads ``summarise``
reports; the figure is the median of the rounds' p50s per configuration (one
noisy round moves it least); added = on - off (and off - before), and for
latency also round by round (``_side_by_side``). The target is judged on
latency, round by round: a model call's span is timed inside that call's
stage latency, which the overheads subtract; the verdict (met, not met,
undecided) on the paired figure's interval (``_side_by_side.median_ci``).
``off-again - off`` under the same estimator says how far from 0 two
identical services land.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from _bench import Server, service_at, start_service, stub_env, stub_model
from _side_by_side import ADDED, compare, rounds, verdict

OFF = {"OTEL_TRACES_EXPORTER": "none"}
TARGET_ADDED_P50_MS = 0.3
# The comparisons reported, new - old (those of configurations measured).
PAIRS = (
    ("on", "off"),
    ("off", "before"),
    ("on-sampled", "off"),
    ("on", "on-earlier"),
    ("off-again", "off"),
)


def service_env(stub_url: str, config: str, ratio: float | None = None) -> dict[str, str]:
    """The environment of one configuration's service (``config`` as named above)."""
    env = {
        **stub_env(stub_url),
        # Every request runs every stage: a cached answer would measure the cache.
        "DIVCONQ_CACHE__ENABLED": "false",
        **OFF,
    }
    if config.startswith("on"):
        env.pop("OTEL_TRACES_EXPORTER")
        env |= {
            "OTEL_EXPORTER_OTLP_ENDPOINT": stub_url,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_SERVICE_NAME": "divconq-bench",
        }
    if config == "on-sampled" and ratio is not None:
        env |= {
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": str(ratio),
        }
    return env


def measured_configs(args: Any) -> list[str]:
    """The configurations a run's options ask for, in the order they are started."""
    configs = ["off", "on"] + (["before"] if args.tracing_baseline else [])
    # (0 is a ratio too: no request sampled, the plumbing alone)
    configs += ["on-sampled"] if args.tracing_ratio is not None else []
    configs += ["on-earlier"] if args.tracing_compare else []
    configs += ["off-again"] if args.tracing_aa else []
    return configs


def tracing_cost(
    measure: Callable[..., Any], measure_interleaved: Callable[..., Any], args: Any
) -> dict[str, Any]:
    """Rows per configuration and mode, and what tracing adds at p50."""
    configs = measured_configs(args)
    trees = {"before": args.tracing_baseline, "on-earlier": args.tracing_compare}
    # Rounds of their own length, when asked (a static p50 over ~80 requests per
    # service in a 30 s round moves by a few tenths of a millisecond).
    args = argparse.Namespace(
        **{**vars(args), "duration_s": args.tracing_duration_s or args.duration_s}
    )
    modes = args.tracing_modes.split(",")

    def one_client(s: Server, mode: str) -> dict[str, Any]:
        row: dict[str, Any] = asyncio.run(measure(s.url, mode, 1, args, "burst", s.cpu_s))
        return row

    def interleaved(servers: dict[str, Server], mode: str, seed: int) -> dict[str, Any]:
        rows: dict[str, Any] = asyncio.run(measure_interleaved(servers, mode, args, seed))
        return rows

    with (
        stub_model(args.tracing_delay_s, precise_timers=True) as stub,
        contextlib.ExitStack() as stack,
    ):
        cwd = {c: stack.enter_context(service_at(trees.get(c))) for c in configs}
        env = {"before": "off", "on-earlier": "on", "off-again": "off"}
        samples = rounds(
            lambda: {
                c: start_service(
                    service_env(stub.url, env.get(c, c), args.tracing_ratio), cwd=cwd[c]
                )
                for c in configs
            },
            args.tracing_rounds,
            one_client,
            fresh=args.fresh,
            together=None if args.tracing_sequential else interleaved,
            modes=modes,
        )
    figures = compare("tracing", samples, "tracing", list(ADDED.values()), PAIRS)
    on = [a for a in figures["added"] if a["compare"] == "on - off"]
    # The spans around model calls are timed as part of those calls (stage
    # latency), so the overheads miss them: the target is judged on latency.
    by_mode = {a["mode"]: a["latency_p50_added_paired_ms"] <= TARGET_ADDED_P50_MS for a in on}
    met = all(by_mode.values()) if on else None
    # The paired figure alone can land under the target by the luck of one run:
    # the verdict asks its whole interval to.
    verdicts = {a["mode"]: verdict(a["paired_ci"], TARGET_ADDED_P50_MS) for a in on}
    print(f"  on adds <= {TARGET_ADDED_P50_MS} ms p50 at one client, paired: {met} {by_mode}")
    print(f"  judged on the paired figure's interval: {verdicts}")
    return {
        "rounds": args.tracing_rounds,
        "duration_s": args.duration_s,
        "modes": modes,
        "design": "sequential" if args.tracing_sequential else "interleaved",
        "delay_s": args.tracing_delay_s,
        "baseline": args.tracing_baseline,
        "compare": args.tracing_compare,
        # on-sampled's sampling ratio (None: not measured): runs pooled by it.
        "ratio": args.tracing_ratio,
        **figures,
        "on_added_client_p50_le_0_3ms": met,
        "on_added_client_p50_le_0_3ms_by_mode": by_mode,
        "on_added_p50_verdict_by_mode": verdicts,
    }
