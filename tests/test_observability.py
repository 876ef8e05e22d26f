"""Metrics, request ids and logs, checked the way an operator would.

/metrics is parsed with prometheus_client's parser; counters must move by
exactly what the responses reported. A real Prometheus scrapes the service,
and every PromQL expression of the Grafana dashboard must name metrics the
live service exposes.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.stacks import SOLVER_API_KEY, SOLVER_NAME, Stack
from tests.support import free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
QUESTION = "Ben has 4 boxes of 6 pencils. He gives away 5 pencils. How many pencils are left?"
DECOMPOSER = "gemma-3-270m"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: httpx.Client) -> Samples:
    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


@pytest.mark.parametrize("mode", ["static", "socratic", "direct"])
def test_counters_move_by_what_responses_report(client: httpx.Client, mode: str) -> None:
    before = scrape(client)
    resp = client.post("/solve", json={"question": QUESTION, "mode": mode, "max_subquestions": 2})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    after = scrape(client)
    usage, subs = body["usage"], body["subquestions"]
    dec, sol = usage["decomposer"], usage["solver"]

    assert (
        delta(before, after, "divconq_requests_total", endpoint="solve", mode=mode, status="200")
        == 1
    )
    assert (
        delta(before, after, "divconq_request_duration_seconds_count", endpoint="solve", mode=mode)
        == 1
    )
    assert value(after, "divconq_requests_in_flight") == 0

    # Tokens by stage: "solve" is the subquestion answers, "final" the last call.
    solve_in = sum(s["usage"]["prompt_tokens"] for s in subs)
    solve_out = sum(s["usage"]["completion_tokens"] for s in subs)
    expected = {
        ("decompose", "input", DECOMPOSER): dec["prompt_tokens"],
        ("decompose", "output", DECOMPOSER): dec["completion_tokens"],
        ("solve", "input", SOLVER_NAME): solve_in,
        ("solve", "output", SOLVER_NAME): solve_out,
        ("final", "input", SOLVER_NAME): sol["prompt_tokens"] - solve_in,
        ("final", "output", SOLVER_NAME): sol["completion_tokens"] - solve_out,
    }
    for (stage, kind, model), tokens in expected.items():
        got = delta(before, after, "divconq_tokens_total", stage=stage, type=kind, model=model)
        assert got == tokens, (stage, kind)

    calls = {
        ("decompose", DECOMPOSER): dec["calls"],
        ("solve", SOLVER_NAME): len(subs),
        ("final", SOLVER_NAME): 1,
    }
    for (stage, model), n in calls.items():
        got = delta(before, after, "divconq_stage_duration_seconds_count", stage=stage, model=model)
        assert got == n, stage
    assert delta(before, after, "divconq_solver_calls_total", outcome="ok") == sol["calls"]
    assert delta(before, after, "divconq_subquestions_per_request_count", mode=mode) == 1
    assert delta(before, after, "divconq_subquestions_per_request_sum", mode=mode) == len(subs)

    cost = sum(
        delta(before, after, "divconq_cost_usd_total", stage=stage, model=SOLVER_NAME)
        for stage in ("solve", "final")
    )
    assert cost == pytest.approx(sol["cost_usd"])
    assert cost > 0
    assert usage["total"]["cost_usd"] == pytest.approx(dec["cost_usd"] + sol["cost_usd"])


def test_errors_are_counted(client: httpx.Client) -> None:
    before = scrape(client)
    assert client.post("/solve", json={"question": ""}).status_code == 422
    assert client.post("/decompose", json={"question": "x" * 300_000}).status_code == 413
    after = scrape(client)
    assert (
        delta(before, after, "divconq_requests_total", endpoint="solve", mode="none", status="422")
        == 1
    )
    assert (
        delta(
            before, after, "divconq_requests_total", endpoint="decompose", mode="none", status="413"
        )
        == 1
    )


def test_engine_metrics_exposed(client: httpx.Client) -> None:
    names = {name for name, _ in scrape(client)}
    for family in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:time_to_first_token_seconds_count",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
    ):
        assert family in names, family


def test_labels_are_bounded(client: httpx.Client) -> None:
    resp = client.post(
        "/solve", json={"question": QUESTION, "mode": "direct"}, headers={"X-Request-ID": "rid-xyz"}
    )
    assert resp.status_code == 200
    text = client.get("/metrics").text
    ours = [line for line in text.splitlines() if line.startswith("divconq_")]
    assert ours
    assert not any("rid-xyz" in line or "pencils" in line for line in ours)
    assert all("vllm" not in line.split("{")[0] for line in ours)


def _prometheus() -> str:
    path = shutil.which("prometheus")
    if path is None:
        pytest.fail("the prometheus binary is missing: .ci/run installs Debian's 'prometheus'")
    return path


@pytest.fixture(scope="module")
def prometheus(service_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prometheus server scraping the service every second, on loopback."""
    tmp = tmp_path_factory.mktemp("prometheus")
    target = service_url.removeprefix("http://")
    (tmp / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n  - job_name: divconq\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )
    port = free_port()
    log = tmp / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                _prometheus(),
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: httpx.get(f"{url}/-/ready").status_code == 200,
            timeout_s=60,
            what="prometheus",
            proc=proc,
            log=log,
        )
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_prometheus_scrapes_request_count(client: httpx.Client, prometheus: str) -> None:
    assert client.post("/solve", json={"question": QUESTION, "mode": "direct"}).status_code == 200
    expected = sum(v for (name, _), v in scrape(client).items() if name == "divconq_requests_total")
    assert expected >= 1

    def scraped() -> bool:
        resp = httpx.get(
            f"{prometheus}/api/v1/query", params={"query": "sum(divconq_requests_total)"}
        ).json()
        result = resp["data"]["result"]
        return bool(result) and float(result[0]["value"][1]) == expected

    wait_until(scraped, timeout_s=30, what="prometheus query")


def test_prometheus_files_pass_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: .ci/run installs Debian's 'prometheus'")
    for args in (
        ["check", "config", str(ROOT / "deploy/prometheus/prometheus.yml")],
        ["check", "rules", str(ROOT / "deploy/prometheus/alerts.yml")],
        # The rules' unit tests: a 499 (the client left) is not a server error.
        ["test", "rules", str(ROOT / "deploy/prometheus/alerts_test.yml")],
    ):
        proc = subprocess.run([promtool, *args], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr


_PROMQL_WORDS = {
    "sum", "by", "without", "rate", "irate", "increase", "histogram_quantile", "clamp_min",
    "clamp_max", "max", "min", "avg", "count", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "le", "offset", "bool", "abs", "topk", "bottomk", "time",
}  # fmt: skip


def promql_metric_names(expr: str) -> set[str]:
    expr = re.sub(r'"[^"]*"', '""', expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\$\w+", "", expr)  # Grafana variables
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))
    # Words inside by (...) / without (...) are labels, not metrics.
    for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        names -= {g.strip() for g in group.split(",")}
    return {n for n in names if n not in _PROMQL_WORDS and not re.fullmatch(r"e\d*", n)}


def _dashboard_exprs() -> list[tuple[str, str]]:
    dash: dict[str, Any] = json.loads((ROOT / "deploy/grafana/dashboards/divconq.json").read_text())
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p["targets"]]


def test_dashboard_names_only_live_metrics(client: httpx.Client) -> None:
    exprs = _dashboard_exprs()
    assert len(exprs) >= 12
    titles = " ".join(t for t, _ in exprs).lower()
    for topic in ("stage latency", "tokens per second", "cost per hour", "error ratio",
                  "in flight", "queue", "kv-cache"):  # fmt: skip
        assert topic in titles, topic
    live = {name for name, _ in scrape(client)}
    for title, expr in exprs:
        names = promql_metric_names(expr)
        assert names, (title, expr)
        missing = names - live
        assert not missing, f"{title}: {sorted(missing)} not on /metrics"


def test_promql_name_extraction() -> None:
    names = promql_metric_names(
        "histogram_quantile(0.95, sum by (le, stage) (rate(divconq_stage_duration_seconds_bucket"
        '{stage="solve"}[$__rate_interval]))) / clamp_min(sum(vllm:num_requests_running), 1e-9)'
    )
    assert names == {"divconq_stage_duration_seconds_bucket", "vllm:num_requests_running"}


def _log_lines(stack: Stack) -> list[dict[str, Any]]:
    lines = []
    for raw in stack.service.log.read_text().splitlines():
        if raw.startswith("{"):
            lines.append(json.loads(raw))
    return lines


def test_request_id_in_logs_and_sent_to_solver(client: httpx.Client, stack: Stack) -> None:
    rid = "trace-0f3c9a"
    resp = client.post(
        "/solve", json={"question": QUESTION, "mode": "static"}, headers={"X-Request-ID": rid}
    )
    assert resp.status_code == 200
    assert resp.headers["x-request-id"] == rid

    def access_lines() -> list[dict[str, Any]]:
        mine = [line for line in _log_lines(stack) if line.get("request_id") == rid]
        return [line for line in mine if line["logger"] == "divconq.access"]

    # The access line is written once the response has gone out, so the
    # client can read the log a moment before it lands.
    wait_until(lambda: bool(access_lines()), timeout_s=10, what="access log line")
    access = access_lines()
    assert len(access) == 1
    line = access[0]
    assert line["status"] == 200 and line["mode"] == "static" and line["path"] == "/solve"
    assert line["level"] == "info"
    for field in ("latency_ms", "decomposer_ms", "solver_ms", "solver_calls"):
        assert isinstance(line[field], int | float), field
    # Every access line of the API endpoints names its request.
    for other in _log_lines(stack):
        if other["logger"] == "divconq.access":
            assert other.get("request_id"), other


def test_no_api_key_in_logs_or_responses(client: httpx.Client, stack: Stack) -> None:
    resp = client.post("/solve", json={"question": QUESTION, "mode": "direct"})
    assert resp.status_code == 200
    assert SOLVER_API_KEY not in resp.text
    assert SOLVER_API_KEY not in client.get("/readyz").text
    assert SOLVER_API_KEY not in client.get("/metrics").text
    assert SOLVER_API_KEY not in stack.service.log.read_text()
