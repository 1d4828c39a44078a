"""deploy/kserve: the InferenceService, validated offline. KServe's own fields against its
v1beta1 API (ComponentExtensionSpec's fields and types); the rest of the predictor, which KServe
inlines from corev1.PodSpec, strictly against the Kubernetes schemas as a Pod (kubernetes-validate,
as for deploy/kubernetes); Knative's rules for a serving container; and the same image, user,
probes, limits and settings as the plain Kubernetes Deployment. The engine tests
(tests/deploy/engine) send these probes and the Open Inference Protocol to the image itself."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

ROOT = Path(__file__).resolve().parents[2]
ISVC = ROOT / "deploy" / "kserve" / "inferenceservice.yaml"
DEPLOYMENT = ROOT / "deploy" / "kubernetes" / "base" / "deployment.yaml"
VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]
# serving.kserve.io/v1beta1 ComponentExtensionSpec: field -> type (KServe's Go types).
KSERVE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "minReplicas": int,
    "maxReplicas": int,
    "scaleTarget": int,
    "scaleMetric": str,
    "containerConcurrency": int,
    "timeout": int,
    "canaryTrafficPercent": int,
    "logger": dict,
    "batcher": dict,
    "labels": dict,
    "annotations": dict,
    "deploymentStrategy": dict,
}
SCALE_METRICS = {"cpu", "memory", "concurrency", "rps"}
# Pod-spec fields Knative accepts with its default feature flags (serverless mode).
KNATIVE_POD_FIELDS = {
    "containers",
    "volumes",
    "serviceAccountName",
    "imagePullSecrets",
    "enableServiceLinks",
    "nodeSelector",
    "tolerations",
    "affinity",
}


def predictor_parts(predictor: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(KServe's own fields, the inlined pod spec)."""
    own = {k: v for k, v in predictor.items() if k in KSERVE_FIELDS}
    return own, {k: v for k, v in predictor.items() if k not in KSERVE_FIELDS}


def as_pod(pod_spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": pod_spec}


@pytest.fixture(scope="module")
def isvc(load_yaml: Callable[[Path], list[dict[str, Any]]]) -> dict[str, Any]:
    (doc,) = load_yaml(ISVC)
    return doc


@pytest.fixture(scope="module")
def deployment(load_yaml: Callable[[Path], list[dict[str, Any]]]) -> dict[str, Any]:
    (doc,) = load_yaml(DEPLOYMENT)
    return doc


def test_is_an_inference_service_with_a_custom_predictor(isvc: dict[str, Any]) -> None:
    assert (isvc["apiVersion"], isvc["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    assert set(isvc["spec"]) == {"predictor"}
    own, _ = predictor_parts(isvc["spec"]["predictor"])
    for name, value in own.items():
        assert isinstance(value, KSERVE_FIELDS[name]), (name, value)
    assert own["scaleMetric"] in SCALE_METRICS
    assert 1 <= own["minReplicas"] <= own["maxReplicas"]
    # KServe serves a custom container when the predictor has containers and no model field.
    assert "model" not in isvc["spec"]["predictor"]
    kubernetes_validate.validate(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": isvc["metadata"]},
        VERSIONS[-1],
        strict=True,
    )  # the metadata, checked as any object's


@pytest.mark.parametrize("version", VERSIONS)
def test_predictor_pod_spec_is_valid_against_the_kubernetes_schema(
    isvc: dict[str, Any], version: str
) -> None:
    _, pod_spec = predictor_parts(isvc["spec"]["predictor"])
    kubernetes_validate.validate(as_pod(pod_spec), version, strict=True)


def test_the_validation_rejects_what_kserve_would(isvc: dict[str, Any]) -> None:
    """So the checks above cannot pass by checking nothing: a misspelt KServe field lands in
    the pod spec and fails there; a bad probe fails as in a Deployment."""
    broken = copy.deepcopy(isvc["spec"]["predictor"])
    broken["minReplica"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(as_pod(predictor_parts(broken)[1]), VERSIONS[-1], strict=True)
    broken = copy.deepcopy(isvc["spec"]["predictor"])
    broken["containers"][0]["readinessProbe"]["httpGet"]["port"] = [8000]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(as_pod(predictor_parts(broken)[1]), VERSIONS[-1], strict=True)


def test_follows_knatives_rules_for_a_serving_container(isvc: dict[str, Any]) -> None:
    _, pod_spec = predictor_parts(isvc["spec"]["predictor"])
    assert set(pod_spec) <= KNATIVE_POD_FIELDS, set(pod_spec) - KNATIVE_POD_FIELDS
    (container,) = pod_spec["containers"]
    assert container["name"] == "kserve-container"
    (port,) = container["ports"]
    assert port["name"] in ("http1", "h2c") and port["containerPort"] == 8000
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["CONVSCOPE_PORT"] == str(port["containerPort"])
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == port["containerPort"]
    assert "startupProbe" not in container  # not in Knative's default allow-list


def test_same_image_user_probes_limits_and_settings_as_the_deployment(
    isvc: dict[str, Any], deployment: dict[str, Any]
) -> None:
    predictor = isvc["spec"]["predictor"]
    (served,) = predictor["containers"]
    pod = deployment["spec"]["template"]["spec"]
    (plain,) = pod["containers"]
    assert served["image"] == plain["image"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert served[probe]["httpGet"]["path"] == plain[probe]["httpGet"]["path"]
    security = served["securityContext"]
    for key in ("runAsNonRoot", "runAsUser", "runAsGroup", "seccompProfile"):
        assert security[key] == pod["securityContext"][key], key
    for key, value in plain["securityContext"].items():
        assert security[key] == value, key
    assert served["resources"] == plain["resources"]
    assert served["volumeMounts"] == plain["volumeMounts"]
    assert predictor["volumes"] == pod["volumes"]
    env = {e["name"]: e["value"] for e in served["env"]}
    assert {e["name"]: e["value"] for e in plain["env"]}.items() <= env.items()
    from service.settings import Settings

    default = Settings.model_fields["graceful_shutdown_s"].default
    # Knative's grace period is the request timeout: the server's draining must fit in it.
    assert predictor["timeout"] > default + 5
    assert predictor["containerConcurrency"] >= predictor["scaleTarget"]
