"""deploy/kubernetes: every manifest validated offline against the Kubernetes OpenAPI schemas
(kubernetes-validate ships them), the kustomize output too where kubectl is installed, and the
pieces checked against each other and against the image."""

from __future__ import annotations

import copy
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
# The oldest Kubernetes still widely run and the newest the validator knows.
VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]


def graceful_shutdown_s(env: dict[str, Any]) -> float:
    """uvicorn's graceful-shutdown timeout as the service will run it with this environment."""
    from service.settings import Settings

    default = Settings.model_fields["graceful_shutdown_s"].default
    return float(env.get("CONVSCOPE_GRACEFUL_SHUTDOWN_S") or default)


def manifest_files() -> list[Path]:
    """Resources, not kustomize's own files or its partial patches."""
    skip = set()
    for kustomization in KUBE.rglob("kustomization.yaml"):
        skip.add(kustomization)
        for patch in yaml.safe_load(kustomization.read_text()).get("patches", []):
            skip.add(kustomization.parent / patch["path"])
    return sorted(p for p in KUBE.rglob("*.yaml") if p not in skip)


@pytest.fixture(scope="module")
def resources(load_yaml: Callable[[Path], list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    docs = [d for p in sorted((KUBE / "base").glob("*.yaml")) for d in load_yaml(p)]
    return {d["kind"]: d for d in docs if d["kind"] != "Kustomization"}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(KUBE)))
def test_manifest_is_valid_against_the_schema(
    path: Path, version: str, load_yaml: Callable[[Path], list[dict[str, Any]]]
) -> None:
    for doc in load_yaml(path):
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_validator_rejects_what_a_cluster_would(resources: dict[str, Any]) -> None:
    """So the test above cannot pass by validating nothing."""
    broken = copy.deepcopy(resources["Deployment"])
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pathh"] = "/"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)
    broken = copy.deepcopy(resources["HorizontalPodAutoscaler"])
    broken["spec"]["minReplicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


@pytest.mark.parametrize("overlay", ["base", "model-volume"])
def test_kustomize_output_is_valid(overlay: str) -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: the kustomize rendering is not checked")
    result = subprocess.run(
        ["kubectl", "kustomize", str(KUBE / overlay)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    kinds = sorted(d["kind"] for d in docs)
    expected = ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget"]
    expected += ["Service"] + (["PersistentVolumeClaim"] if overlay == "model-volume" else [])
    assert kinds == sorted(expected)
    for doc in docs:
        kubernetes_validate.validate(doc, VERSIONS[-1], strict=True)
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    config = next(d for d in docs if d["kind"] == "ConfigMap")["metadata"]["name"]
    assert container["envFrom"][0]["configMapRef"]["name"] == config  # hashed name rewired
    env = {e["name"]: e["value"] for e in container["env"]}
    if overlay == "model-volume":
        mount = next(m for m in container["volumeMounts"] if m["name"] == "models")
        assert mount["readOnly"] is True and env["CONVSCOPE_MODEL_DIR"] == mount["mountPath"]
        volume = next(v for v in pod["volumes"] if v["name"] == "models")
        assert volume["persistentVolumeClaim"]["readOnly"] is True
    else:
        assert env["CONVSCOPE_MODEL_DIR"] == "/app/models"  # the model shipped in the image


def test_kustomization_lists_every_resource(resources: dict[str, Any]) -> None:
    listed = yaml.safe_load((KUBE / "base" / "kustomization.yaml").read_text())["resources"]
    files = sorted(p.name for p in (KUBE / "base").glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == files


def test_probes_security_and_resources(resources: dict[str, Any], stages: dict[str, Any]) -> None:
    pod = resources["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": int(stages["runtime"].env()["CONVSCOPE_PORT"])}
    probes = {
        kind: (container[kind]["httpGet"]["path"], container[kind]["httpGet"]["port"])
        for kind in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert probes == {
        "startupProbe": ("/healthz", "http"),
        "livenessProbe": ("/healthz", "http"),
        "readinessProbe": ("/readyz", "http"),
    }
    # The image's non-root uid, checked by the kubelet before the container starts.
    uid = int(stages["runtime"].values("USER")[-1].split(":")[0])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == uid
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp"}
    resources_ = container["resources"]
    assert {"cpu", "memory"} <= set(resources_["requests"]) and "memory" in resources_["limits"]
    env = {e["name"]: e["value"] for e in container["env"]}
    cpus, workers = int(resources_["limits"]["cpu"]), int(env["CONVSCOPE_WORKERS"])
    assert workers == cpus and workers * int(env["CONVSCOPE_INTRA_OP_THREADS"]) == cpus
    assert workers * int(env["CONVSCOPE_DECODE_THREADS"]) == 2 * cpus
    # Draining fits in the grace period: preStop pause + the server's graceful shutdown.
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pod["terminationGracePeriodSeconds"] > pause + graceful_shutdown_s(env)


def test_service_hpa_and_pdb_point_at_the_deployment(resources: dict[str, Any]) -> None:
    deployment = resources["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service, pdb, hpa = (
        resources["Service"],
        resources["PodDisruptionBudget"],
        resources["HorizontalPodAutoscaler"],
    )
    assert service["spec"]["selector"].items() <= labels.items()
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    container_ports = {p["name"] for p in container["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= container_ports
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        deployment["apiVersion"],
        "Deployment",
        deployment["metadata"]["name"],
    )
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    # A PDB that allows one eviction must leave the HPA's minimum minus one running.
    assert hpa["spec"]["minReplicas"] >= 2 and pdb["spec"]["maxUnavailable"] == 1
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_configuration_is_accepted_by_the_service_settings(
    resources: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.settings import Settings

    kustomization = yaml.safe_load((KUBE / "base" / "kustomization.yaml").read_text())
    (generator,) = kustomization["configMapGenerator"]
    env = dict(item.split("=", 1) for item in generator["literals"])
    container = resources["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    env |= {e["name"]: e["value"] for e in container["env"]}
    known = {f"CONVSCOPE_{name.upper()}" for name in Settings.model_fields}
    assert set(env) <= known, f"not settings: {set(env) - known}"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CONVSCOPE_MODEL_DIR", str(ROOT / "models"))  # /app/models is the image's
    settings = Settings()
    assert settings.port == 8000 and settings.host == "0.0.0.0"
    nginx = (ROOT / "deploy" / "nginx" / "nginx.conf").read_text()
    assert "client_max_body_size 10m;" in nginx
    assert settings.max_upload_bytes == 10 * 1024 * 1024, "keep equal to the proxy's body limit"
