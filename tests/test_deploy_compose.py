"""Docker Compose stack, Grafana provisioning and .env.example, checked
without a Docker engine.

- docker-compose.yml: rendered by Docker Compose v2 (`docker compose config`),
  with the defaults of .env.example and with a hosted solver;
- deploy/grafana: the provisioned datasource and the dashboards that use it;
- .env.example: exactly the real settings, each with its true default.

`make install` installs Compose (scripts/install.sh); where it is missing the
tests fail. Shared helpers are in tests/deploy_support.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.core.settings import Settings
from tests.deploy_support import ROOT, SETTING_ENV_NAMES, run

COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
GRAFANA = ROOT / "deploy" / "grafana"
COMPOSE_SERVICES = {"divconq", "redis", "postgres", "solver", "prometheus", "grafana", "jaeger"}


# ------------------------------------------------------------ compose v2 --


def _compose_cmd() -> list[str]:
    """Docker Compose v2: the docker CLI plugin, else the standalone binary."""
    candidates = [["docker", "compose"], ["docker-compose"]]
    for cmd in candidates:
        if shutil.which(cmd[0]) is None:
            continue
        out = run([*cmd, "version"])
        if out.returncode == 0 and re.search(r"Compose version v?2\.", out.stdout):
            return cmd
    pytest.fail("Docker Compose v2 is not installed: `make install` installs it")


def _compose_config(env_file: Path, extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """`docker compose config` in JSON, with only the given variables set."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/root")}
    env.update(extra_env or {})
    out = run(
        [
            *_compose_cmd(),
            "--project-directory",
            str(ROOT),
            "-f",
            str(COMPOSE_FILE),
            "--env-file",
            str(env_file),
            "config",
            "--format",
            "json",
        ],
        env=env,
    )
    assert out.returncode == 0, out.stderr
    config = json.loads(out.stdout)
    assert isinstance(config, dict)
    return config


@pytest.fixture(scope="module")
def compose_default() -> dict[str, Any]:
    return _compose_config(ENV_EXAMPLE)


def _mounts(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["target"]: v for v in service.get("volumes", [])}


def test_compose_renders_the_stack(compose_default: dict[str, Any]) -> None:
    services = compose_default["services"]
    assert set(services) == COMPOSE_SERVICES

    divconq = services["divconq"]
    assert divconq["build"]["args"]["VARIANT"] == "gpu"
    assert divconq["image"] == "divconq:gpu"
    [gpu] = divconq["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    assert _mounts(divconq)["/data"]["type"] == "volume"
    assert any(p["target"] == 8000 for p in divconq["ports"])
    assert "/healthz" in " ".join(divconq["healthcheck"]["test"])

    # The service reaches the local solver by its compose name, under the
    # model name the solver serves.
    env = divconq["environment"]
    solver = services["solver"]
    assert env["DIVCONQ_SOLVER__BASE_URL"] == "http://solver:8000/v1"
    command = solver["command"]
    assert command[command.index("--served-model-name") + 1] == env["DIVCONQ_SOLVER__MODEL"]
    assert solver["image"].startswith("vllm/vllm-openai:")
    assert solver["deploy"]["replicas"] == 1
    assert solver["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
    # All share one GPU by default: their memory shares must fit in it.
    share = float(command[command.index("--gpu-memory-utilization") + 1])
    replicas = int(divconq["scale"])
    decomposer = float(env["DIVCONQ_DECOMPOSER__GPU_MEMORY_UTILIZATION"])
    assert share + replicas * decomposer <= 0.95


def test_compose_replicas_share_one_redis(compose_default: dict[str, Any]) -> None:
    """Two replicas, one host port each, counting per-key limits in the stack's Redis."""
    services = compose_default["services"]
    divconq = services["divconq"]
    assert divconq["scale"] == 2
    [port] = divconq["ports"]
    assert (port["target"], port["published"]) == (8000, "8000-8001")
    assert divconq["environment"]["DIVCONQ_REDIS_URL"] == "redis://redis:6379/0"
    assert divconq["depends_on"]["redis"]["condition"] == "service_healthy"
    # A /data of each replica's own: two never convert the model into one place.
    assert "source" not in _mounts(divconq)["/data"]
    redis = services["redis"]
    assert redis["image"].startswith("redis:")
    assert "ports" not in redis  # internal only
    assert _mounts(redis)["/data"]["source"] == "redis-data"
    assert "--appendonly" in redis["command"]


def test_compose_monitoring(compose_default: dict[str, Any]) -> None:
    services = compose_default["services"]
    prometheus = services["prometheus"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    config_mount = _mounts(prometheus)["/etc/prometheus"]
    assert config_mount["type"] == "bind" and config_mount["read_only"]
    assert Path(config_mount["source"]) == ROOT / "deploy" / "prometheus"
    assert (ROOT / "deploy" / "prometheus" / "prometheus.yml").is_file()

    grafana = _mounts(services["grafana"])
    assert Path(grafana["/etc/grafana/provisioning"]["source"]) == GRAFANA / "provisioning"
    assert Path(grafana["/var/lib/grafana/dashboards"]["source"]) == GRAFANA / "dashboards"


def test_compose_traces_to_jaeger(compose_default: dict[str, Any]) -> None:
    """The service exports its spans to the stack's Jaeger, the OpenTelemetry way;
    Prometheus keeps the exemplars that link latency buckets to them."""
    services = compose_default["services"]
    env = services["divconq"]["environment"]
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    assert env["OTEL_SERVICE_NAME"] == "divconq"
    jaeger = services["jaeger"]
    assert jaeger["image"].startswith("jaegertracing/jaeger:")
    assert "--set=receivers.otlp.protocols.http.endpoint=0.0.0.0:4318" in jaeger["command"]
    assert [p["target"] for p in jaeger["ports"]] == [16686]
    assert jaeger["ports"][0]["host_ip"] == "127.0.0.1"
    assert "--enable-feature=exemplar-storage" in services["prometheus"]["command"]


def test_compose_hosted_solver_by_environment(tmp_path: Path) -> None:
    """SOLVER_REPLICAS=0 plus the DIVCONQ_SOLVER__* variables swap in a hosted API."""
    env_file = tmp_path / ".env"
    env_file.write_text(
        "SOLVER_REPLICAS=0\n"
        "DIVCONQ_SOLVER__BASE_URL=https://api.anthropic.com/v1/\n"
        "DIVCONQ_SOLVER__MODEL=claude-sonnet-4-5\n"
    )
    config = _compose_config(env_file, {"DIVCONQ_SOLVER__API_KEY": "test-key"})
    assert config["services"]["solver"]["deploy"]["replicas"] == 0
    env = config["services"]["divconq"]["environment"]
    assert env["DIVCONQ_SOLVER__BASE_URL"] == "https://api.anthropic.com/v1/"
    assert env["DIVCONQ_SOLVER__MODEL"] == "claude-sonnet-4-5"
    assert env["DIVCONQ_SOLVER__API_KEY"] == "test-key"


def test_compose_variables_are_documented(compose_default: dict[str, Any]) -> None:
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE_FILE.read_text()))
    documented = set(re.findall(r"^# ([A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), re.MULTILINE))
    assert used - documented == set()
    # Whatever the stack hands the service as DIVCONQ_* is a real setting.
    passed = set(compose_default["services"]["divconq"]["environment"])
    assert {n for n in passed if n.startswith("DIVCONQ_")} <= set(SETTING_ENV_NAMES)


# --------------------------------------------------------------- grafana --


def test_grafana_provisioning() -> None:
    [datasource] = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"]
    assert datasource["name"] == "Prometheus"
    assert datasource["uid"] == "prometheus"
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"

    # Exemplars (label trace_id) link to the provisioned Jaeger.
    [link] = datasource["jsonData"]["exemplarTraceIdDestinations"]
    [jaeger] = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "jaeger.yml").read_text()
    )["datasources"]
    assert link == {"name": "trace_id", "datasourceUid": jaeger["uid"]}
    assert jaeger["type"] == "jaeger" and jaeger["url"] == "http://jaeger:16686"

    [provider] = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "dashboards.yml").read_text()
    )["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"

    # Dashboards refer to datasources by uid: only the provisioned one exists.
    dashboards = sorted((GRAFANA / "dashboards").glob("*.json"))
    assert dashboards
    for dashboard in dashboards:
        refs = re.findall(r'"datasource":\s*\{[^{}]*"uid":\s*"([^"]+)"', dashboard.read_text())
        assert refs, f"{dashboard.name} uses no datasource"
        assert set(refs) == {datasource["uid"]}, dashboard.name


# ------------------------------------------------------------ .env.example --


def _env_example_lines() -> dict[str, tuple[bool, str]]:
    """DIVCONQ_* lines of .env.example -> (commented out, value)."""
    lines: dict[str, tuple[bool, str]] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.match(r"^(# )?(DIVCONQ_[A-Z0-9_]+)=(.*)$", line)
        if match:
            name = match.group(2)
            assert name not in lines, f"{name} is listed twice"
            lines[name] = (match.group(1) is not None, match.group(3))
    return lines


def test_env_example_lists_exactly_the_settings() -> None:
    listed = set(_env_example_lines())
    assert set(SETTING_ENV_NAMES) - listed == set(), "settings missing from .env.example"
    assert listed - set(SETTING_ENV_NAMES) == set(), "not settings: .env.example has extras"


def test_env_example_lines_have_a_meaning() -> None:
    """Each variable follows a comment that explains it (shared by a group)."""
    lines = ENV_EXAMPLE.read_text().splitlines()
    assignment = re.compile(r"^# ?[A-Z][A-Z0-9_]*=")
    for i, line in enumerate(lines):
        if not assignment.match(line):
            continue
        j = i - 1
        while j >= 0 and assignment.match(lines[j]):
            j -= 1
        assert j >= 0 and lines[j].startswith("# ") and len(lines[j]) > 4, line


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in list(os.environ):
        if name.startswith("DIVCONQ_"):
            monkeypatch.delenv(name)
    yield monkeypatch


def _value(settings: Settings, name: str) -> Any:
    model, field = SETTING_ENV_NAMES[name]
    obj: Any = settings
    for part in name.removeprefix("DIVCONQ_").lower().split("__")[:-1]:
        obj = getattr(obj, part)
    assert isinstance(obj, model)
    return getattr(obj, field)


def test_env_example_shows_the_true_defaults(clean_env: pytest.MonkeyPatch) -> None:
    """Each commented-out line, set alone, parses to the setting's default."""
    defaults = Settings()
    for name, (commented, value) in _env_example_lines().items():
        assert commented, f"{name}: .env.example changes no setting; comment it out"
        clean_env.setenv(name, value)
        got, want = _value(Settings(), name), _value(defaults, name)
        if isinstance(want, Path):
            got = Path(got).expanduser()
        assert got == want, f"{name}={value!r} in .env.example, default is {want!r}"
        clean_env.delenv(name)


def test_compose_replicas_write_one_postgresql_ledger(compose_default: dict[str, Any]) -> None:
    """Every replica's ledger rows go to the stack's PostgreSQL, kept on a volume."""
    services = compose_default["services"]
    divconq = services["divconq"]
    url = divconq["environment"]["DIVCONQ_LEDGER_URL"]
    assert url == "postgresql://divconq:divconq@postgres:5432/divconq"
    assert divconq["depends_on"]["postgres"]["condition"] == "service_healthy"
    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:")
    assert "ports" not in postgres  # internal only
    assert _mounts(postgres)["/var/lib/postgresql/data"]["source"] == "postgres-data"
    env = postgres["environment"]
    assert (env["POSTGRES_USER"], env["POSTGRES_DB"]) == ("divconq", "divconq")
    assert "pg_isready" in postgres["healthcheck"]["test"]
