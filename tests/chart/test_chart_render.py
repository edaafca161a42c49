"""What the chart renders, per scenario: the objects, the operator's env contract, custom resources checked
against their CRDs, and every built-in object checked against the Kubernetes OpenAPI schemas."""

from __future__ import annotations

from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest

RELEASE_NS = "asr-system"
FULLNAME = "asr-asr-platform"
OPERATOR_ENV = {
    "ASR_OPERATOR_WATCH_NAMESPACES",
    "ASR_OPERATOR_INFERENCE_IMAGE",
    "ASR_OPERATOR_PEERING_NAME",
    "ASR_OPERATOR_LIVENESS_PORT",
    "ASR_OPERATOR_METRICS_PORT",
    "ASR_OPERATOR_LOG_LEVEL",
}
# Custom resources kubernetes-validate has no schema for. ASRDeployment and the kopf peerings are validated
# against their CRDs below; ServiceMonitor's CRD is not ours to ship: checked structurally instead.
CUSTOM_KINDS = {"ASRDeployment", "ServiceMonitor", "KopfPeering", "ClusterKopfPeering"}


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {[o['metadata'].get('name') for o in found]}"
    return found[0]


def operator_deployment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return one(objects, "Deployment")


def env_of(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.mark.parametrize("kube_version", ["1.30", "1.33"])
def test_every_builtin_object_passes_strict_openapi_validation(rendered, scenario, kube_version):
    checked = 0
    for obj in rendered[scenario]:
        if obj["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(obj, kube_version, strict=True)
        checked += 1
    assert checked >= 5  # ServiceAccount, ClusterRole(+Binding), Deployment, Service, test pod(s)


def test_custom_resources_match_their_crd_schemas(rendered, scenario, crd_schemas):
    for obj in rendered[scenario]:
        if obj["kind"] not in {"ASRDeployment", "KopfPeering", "ClusterKopfPeering"}:
            continue
        group, version = obj["apiVersion"].split("/")
        schema = crd_schemas.get((group, version, obj["kind"]))
        assert schema is not None, f"no CRD in crds/ serves {obj['apiVersion']} {obj['kind']}"
        jsonschema.validate(obj, schema)


def test_crd_schema_check_rejects_a_bad_asrdeployment(crd_schemas):
    # The check above is only worth something if the CRD schema rejects what the API server would reject.
    schema = crd_schemas[("asr-platform.io", "v1alpha1", "ASRDeployment")]
    good = {"apiVersion": "asr-platform.io/v1alpha1", "kind": "ASRDeployment", "metadata": {"name": "x"}}
    jsonschema.validate({**good, "spec": {"model": {"source": "builtin:demo"}}}, schema)
    bad_specs = ({}, {"model": {"source": "builtin:demo"}, "precision": "int4"}, {"model": {"source": ""}})
    for bad_spec in bad_specs:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**good, "spec": bad_spec}, schema)


def test_default_install_renders_exactly_the_operator_and_its_access(rendered):
    kinds = sorted(o["kind"] for o in rendered["default"])
    assert kinds == sorted(["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "Pod"]), (
        kinds
    )
    for obj in rendered["default"]:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "asr-platform"
        assert labels["app.kubernetes.io/instance"] == "asr"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/version"] == "0.1.0"
        assert labels["helm.sh/chart"] == "asr-platform-0.1.0"


def test_every_object_carries_the_standard_labels(rendered, scenario):
    for obj in rendered[scenario]:
        labels = obj["metadata"].get("labels", {})
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "helm.sh/chart"):
            assert key in labels, f"{obj['kind']}/{obj['metadata']['name']} lacks {key}"


def test_operator_deployment_contract_with_defaults(rendered):
    deployment = operator_deployment(rendered["default"])
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/asr-platform/asr-operator:0.1.0"
    assert container["command"] == ["asr-operator"]
    env = env_of(deployment)
    assert set(env) >= OPERATOR_ENV
    assert env["ASR_OPERATOR_WATCH_NAMESPACES"] == ""
    assert env["ASR_OPERATOR_INFERENCE_IMAGE"] == "ghcr.io/asr-platform/asr-inference:0.1.0"
    assert env["ASR_OPERATOR_PEERING_NAME"] == ""
    assert env["ASR_OPERATOR_LIVENESS_PORT"] == "8080"
    assert env["ASR_OPERATOR_METRICS_PORT"] == "9090"
    assert env["ASR_OPERATOR_LOG_LEVEL"] == "info"
    assert env["POD_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    # A standalone operator is never run twice at once, not even during a rollout.
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    probe = container["livenessProbe"]["httpGet"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert probe["path"] == "/healthz"
    assert ports[probe["port"]] == 8080
    assert ports["http-metrics"] == 9090
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]


def test_operator_settings_parse_the_rendered_env(rendered, scenario, monkeypatch):
    """The env the chart renders is what the operator's own settings class reads."""
    from asr_operator.settings import OperatorSettings

    env = env_of(operator_deployment(rendered[scenario]))
    for name in OPERATOR_ENV:
        monkeypatch.setenv(name, env[name])
    settings = OperatorSettings()
    assert settings.namespaces == [ns for ns in env["ASR_OPERATOR_WATCH_NAMESPACES"].split(",") if ns]
    assert settings.inference_image == env["ASR_OPERATOR_INFERENCE_IMAGE"]
    assert settings.peering_name == env["ASR_OPERATOR_PEERING_NAME"]
    assert settings.liveness_port == int(env["ASR_OPERATOR_LIVENESS_PORT"])
    assert settings.metrics_port == int(env["ASR_OPERATOR_METRICS_PORT"])


def test_cluster_wide_scenario(rendered):
    objects = rendered["cluster-wide-values"]
    env = env_of(operator_deployment(objects))
    assert env["ASR_OPERATOR_WATCH_NAMESPACES"] == ""
    assert env["ASR_OPERATOR_INFERENCE_IMAGE"] == "registry.example.com/asr/asr-inference:0.1.0-cuda12"
    assert env["ASR_OPERATOR_LOG_LEVEL"] == "DEBUG"
    assert (
        operator_deployment(objects)["spec"]["template"]["spec"]["containers"][0]["image"]
        == "registry.example.com/asr/asr-operator:0.1.0-rc1"
    )
    assert not of_kind(objects, "Role") and not of_kind(objects, "RoleBinding")
    binding = one(objects, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == one(objects, "ClusterRole")["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": FULLNAME, "namespace": RELEASE_NS},
    ]


def test_namespaced_scenario_has_a_role_and_peering_per_namespace(rendered):
    objects = rendered["namespaced-values"]
    env = env_of(operator_deployment(objects))
    assert env["ASR_OPERATOR_WATCH_NAMESPACES"] == "speech,speech-staging"
    assert env["ASR_OPERATOR_PEERING_NAME"] == FULLNAME
    for kind in ("Role", "RoleBinding", "KopfPeering"):
        namespaces = sorted(o["metadata"]["namespace"] for o in of_kind(objects, kind))
        assert namespaces == ["speech", "speech-staging"], kind
    for binding in of_kind(objects, "RoleBinding"):
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": f"{FULLNAME}-operator",
        }
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": RELEASE_NS}]
    assert {o["metadata"]["name"] for o in of_kind(objects, "KopfPeering")} == {FULLNAME}
    assert not of_kind(objects, "ClusterKopfPeering")
    deployment = operator_deployment(objects)
    assert deployment["spec"]["template"]["spec"]["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert deployment["spec"]["template"]["spec"]["tolerations"][0]["key"] == "dedicated"


def test_ha_scenario(rendered):
    objects = rendered["ha-values"]
    deployment = operator_deployment(objects)
    env = env_of(deployment)
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert env["ASR_OPERATOR_PEERING_NAME"] == "asr-operator"
    assert env["HTTPS_PROXY"] == "http://proxy.example:3128"
    assert one(objects, "ClusterKopfPeering")["metadata"]["name"] == "asr-operator"
    assert not of_kind(objects, "KopfPeering")
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    asrds = {o["metadata"]["name"]: o for o in of_kind(objects, "ASRDeployment")}
    assert set(asrds) == {"sensevoice", "demo"}
    assert asrds["sensevoice"]["metadata"]["namespace"] == "speech"
    assert asrds["demo"]["metadata"]["namespace"] == RELEASE_NS
    assert asrds["sensevoice"]["metadata"]["labels"]["example.com/model"] == "sensevoice"
    assert asrds["sensevoice"]["metadata"]["annotations"] == {"example.com/owner": "speech-team"}
    assert asrds["sensevoice"]["spec"]["autoscaling"]["engine"] == "hpa"
    assert {o["metadata"]["name"] for o in of_kind(objects, "ConfigMap")} == {
        f"{FULLNAME}-dashboard",
        f"{FULLNAME}-prometheus-adapter-rules",
    }
    for obj in objects:
        assert obj["metadata"]["labels"]["example.com/platform"] == "asr"


def test_asrdeployment_spec_is_passed_through_unchanged(render, scenario_values):
    values = scenario_values("ha-values")
    objects = render(values)
    for item in values["asrDeployments"]:
        (obj,) = [o for o in of_kind(objects, "ASRDeployment") if o["metadata"]["name"] == item["name"]]
        assert obj["spec"] == item["spec"]
        assert obj["apiVersion"] == "asr-platform.io/v1alpha1"


def test_servicemonitor_selects_the_operator_metrics_service(rendered):
    objects = rendered["ha-values"]
    monitor = one(objects, "ServiceMonitor")
    service = one(objects, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == "monitoring"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [RELEASE_NS]}
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    service_ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert endpoint["port"] in service_ports and endpoint["path"] == "/metrics"
    assert service_ports[endpoint["port"]]["port"] == 9090
    # The Service reaches the operator pods.
    template_labels = operator_deployment(objects)["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= template_labels.items()


def test_helm_test_pods(rendered):
    def test_pods(scenario: str) -> dict[str, dict[str, Any]]:
        pods = of_kind(rendered[scenario], "Pod")
        for pod in pods:
            assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
            assert pod["spec"]["restartPolicy"] == "Never"
        return {p["metadata"]["name"]: p for p in pods}

    def url(pod: dict[str, Any]) -> str:
        return pod["spec"]["containers"][0]["command"][-1]

    default = test_pods("default")
    assert set(default) == {f"{FULLNAME}-test-healthz"}  # no ASRDeployment known: only the operator check
    assert url(default[f"{FULLNAME}-test-healthz"]) == f"http://{FULLNAME}-operator.{RELEASE_NS}.svc:8080/healthz"
    expected = {
        "cluster-wide-values": "http://sensevoice.speech.svc:8000/readyz",
        "namespaced-values": "http://sensevoice.speech.svc:8000/readyz",
        "ha-values": f"http://demo.{RELEASE_NS}.svc:8000/readyz",
    }
    for scenario, readyz in expected.items():
        assert url(test_pods(scenario)[f"{FULLNAME}-test-readyz"]) == readyz


def test_readyz_target_defaults_to_the_first_asrdeployment(render):
    objects = render({"asrDeployments": [{"name": "first", "namespace": "speech", "spec": {}}]})
    (pod,) = [p for p in of_kind(objects, "Pod") if p["metadata"]["name"].endswith("-test-readyz")]
    assert pod["spec"]["containers"][0]["command"][-1] == "http://first.speech.svc:8000/readyz"
    assert not [p for p in of_kind(render({"tests": {"enabled": False}}), "Pod")]


def test_image_digest_replaces_the_tag(render):
    digest = "sha256:" + "ab" * 32
    objects = render({"operator": {"image": {"digest": digest}}, "inference": {"image": {"digest": digest}}})
    deployment = operator_deployment(objects)
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == (
        f"ghcr.io/asr-platform/asr-operator@{digest}"
    )
    inference_image = env_of(deployment)["ASR_OPERATOR_INFERENCE_IMAGE"]
    assert inference_image == f"ghcr.io/asr-platform/asr-inference@{digest}"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"operator": {"replicas": 2}}, "needs operator.peering.enabled"),
        (
            {"operator": {"watchNamespaces": ["speech"]}, "asrDeployments": [{"name": "a", "spec": {}}]},
            "does not watch",
        ),
        ({"serviceAccount": {"create": False}}, "serviceAccount.name is required"),
    ],
)
def test_inconsistent_values_fail_to_render(chart, values, message):
    with pytest.raises(helm_python.HelmError, match=message):
        chart.render(values, name="asr", namespace=RELEASE_NS)


def test_notes_tell_what_to_do_next(notes):
    for text in notes.values():
        assert "port-forward" in text and "/readyz" in text and "helm test asr" in text
        assert "helm upgrade` does not update them" in text
    assert "prometheus-adapter" in notes["ha-values"] and "asr_load" in notes["ha-values"]
    assert "prometheus-adapter" not in notes["default"]
    assert "speech,speech-staging" in notes["namespaced-values"]
