"""Engine starts in a row: seconds to /readyz, hangs, what is left when the API process dies.

Each start is `python -m service serve` on the embedded default (the model
prepared beforehand), from one of the given source trees in turn, so that a
checkout of an earlier commit and this one alternate and are compared side
by side. A start that is not ready within --hang-s counts as a hang. Once
ready (or hung), the script counts the connections to the service's port
that a child of the API process holds (the engine core must hold none: one
accepted before it forked stays open while the core lives), then the API
process is killed (--signal kill: SIGKILL, as a
crash; term: SIGTERM, a normal stop), and the script measures how long until
no process of that start is left and whether its port can be bound again.
Whatever is still alive after --left-s is killed here and reported as left.

    python benchmarks/engine_starts.py --starts 25 --trees /tmp/before .

prints one row per start and one summary row per tree (starts, hangs, median
and range of seconds to /readyz, processes left behind).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from _bench import ROOT, machine, start_service, table, write_json

from service.cli import procs


def _alive(pids: list[int]) -> list[int]:
    left = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                left.append(pid)
    return left


def _port_free(url: str) -> bool:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    try:
        procs.bound_socket(host, int(port)).close()
    except OSError:
        return False
    return True


def _held_by_children(api_pid: int, url: str) -> int:
    """Sockets on the service's port held by the API process's descendants."""
    port = int(url.rsplit(":", 1)[1])
    count = 0
    with contextlib.suppress(psutil.NoSuchProcess):
        for child in psutil.Process(api_pid).children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                conns = child.net_connections("tcp")
                count += sum(1 for c in conns if c.laddr and c.laddr.port == port)
    return count


def one_start(tree: Path, args: argparse.Namespace, n: int) -> dict[str, Any]:
    log = Path(args.logs) / f"start-{n:03d}.log"
    server = start_service({"DIVCONQ_LOG_LEVEL": "info"}, log=log, cwd=tree)
    ready_s: float | None = None
    deadline = time.monotonic() + args.hang_s
    while time.monotonic() < deadline and server.proc.poll() is None:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{server.url}/readyz", timeout=5).status_code == 200:
                ready_s = time.perf_counter() - server.started
                break
        time.sleep(args.poll_s)
    exited = server.proc.poll() is not None
    pids = [] if exited else [p.pid for p in server.tree()]
    held = 0 if exited else _held_by_children(server.proc.pid, server.url)
    sig = signal.SIGKILL if args.signal == "kill" else signal.SIGTERM
    killed_at = time.monotonic()
    with contextlib.suppress(ProcessLookupError):
        os.kill(server.proc.pid, sig)
    server.proc.wait()
    while _alive(pids) and time.monotonic() - killed_at < args.left_s:
        time.sleep(0.1)
    gone_s = time.monotonic() - killed_at
    left = _alive(pids)
    port_free = _port_free(server.url)
    for pid in left:  # never leave an engine behind
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).kill()
    return {
        "start": n,
        "tree": str(tree),
        "ready_s": round(ready_s, 1) if ready_s is not None else None,
        "hung": ready_s is None and not exited,
        "failed": exited,
        "processes": len(pids),
        "child_held_connections": held,
        "gone_s": round(gone_s, 1),
        "left": len(left),
        "port_free": port_free,
    }


def summary(rows: list[dict[str, Any]], tree: str) -> dict[str, Any]:
    mine = [r for r in rows if r["tree"] == tree]
    ready = [r["ready_s"] for r in mine if r["ready_s"] is not None]
    return {
        "tree": tree,
        "starts": len(mine),
        "hangs": sum(r["hung"] for r in mine),
        "failed": sum(r["failed"] for r in mine),
        "ready_median_s": round(statistics.median(ready), 1) if ready else None,
        "ready_min_s": min(ready, default=None),
        "ready_max_s": max(ready, default=None),
        "starts_leaving_processes": sum(r["left"] > 0 for r in mine),
        "starts_child_held_a_connection": sum(r["child_held_connections"] > 0 for r in mine),
        "port_busy_after": sum(not r["port_free"] for r in mine),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--starts", type=int, default=3, help="starts per tree (default: 3)")
    parser.add_argument(
        "--trees",
        nargs="+",
        default=[str(ROOT)],
        help="source trees to start from, alternating (default: this checkout)",
    )
    parser.add_argument(
        "--signal",
        choices=["kill", "term"],
        default="kill",
        help="how the API process is stopped after each start (default: kill)",
    )
    parser.add_argument(
        "--poll-s",
        type=float,
        default=0.2,
        help="pause between /readyz probes (default: 0.2; the tests poll every 0.1)",
    )
    parser.add_argument(
        "--hang-s", type=float, default=600, help="not ready after this: a hang (default: 600)"
    )
    parser.add_argument(
        "--left-s",
        type=float,
        default=30,
        help="processes alive this long after the kill count as left (default: 30)",
    )
    parser.add_argument(
        "--logs", default="/tmp/engine-starts", help="service logs (default: %(default)s)"
    )
    parser.add_argument(
        "--out",
        default=str(ROOT / "benchmarks" / "results" / "engine_starts.json"),
        help="JSON report (default: %(default)s)",
    )
    args = parser.parse_args()
    Path(args.logs).mkdir(parents=True, exist_ok=True)
    trees = [str(Path(t).resolve()) for t in args.trees]
    rows: list[dict[str, Any]] = []
    for i in range(args.starts):
        for tree in trees:
            row = one_start(Path(tree), args, len(rows) + 1)
            rows.append(row)
            print(table([row]).splitlines()[-1] if i or tree != trees[0] else table([row]))
            sys.stdout.flush()
    sums = [summary(rows, t) for t in trees]
    print()
    print(table(sums))
    report = {"machine": machine(), "settings": vars(args), "rows": rows, "summary": sums}
    write_json(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
