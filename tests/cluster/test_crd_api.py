"""The ASRDeployment CRD against the real API server: acceptance, schema + CEL rejections with the message a
user sees from `kubectl apply`, server-side defaults, printer columns, the scale subresource."""

from __future__ import annotations

import copy
import json
import sys
from typing import Any

import pytest
import yaml
from localkube import GROUP_VERSION, REPO, Kube

sys.path.insert(0, str(REPO / "tests" / "operator"))
from crdtools import apply_defaults  # the offline stand-in the kmock tests use: it must agree with the server

BASE: dict[str, Any] = {"model": {"source": "iic/SenseVoiceSmall"}}
CRD = yaml.safe_load((REPO / "crds" / "asrdeployments.yaml").read_text())


def _cr(spec: dict[str, Any], namespace: str, name: str = "asr") -> dict[str, Any]:
    return {"apiVersion": GROUP_VERSION, "kind": "ASRDeployment", "metadata": {"name": name, "namespace": namespace},
            "spec": spec}  # fmt: skip


def _with(**changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        node = spec
        *parents, last = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return spec


# (spec, the part of kubectl's error message a user must see). Schema (OpenAPI) and CEL rules both.
INVALID: dict[str, tuple[dict[str, Any], str]] = {
    "fp16-on-cpu": (_with(device="cpu", precision="fp16"), "precision fp16 needs device cuda"),
    "gpus-on-cpu": (_with(device="cpu", resources__gpus=1), "resources.gpus > 0 needs device cuda"),
    "cuda-zero-gpus": (_with(resources__gpus=0), "device cuda needs resources.gpus >= 1"),
    "seventeen-gpus": (_with(resources__gpus=17), "gpus in body should be less than or equal to 16"),
    "min-above-max": (
        _with(autoscaling={"enabled": True, "engine": "hpa", "minReplicas": 5, "maxReplicas": 2}),
        "autoscaling.minReplicas must be <= autoscaling.maxReplicas",
    ),
    "keda-without-prometheus": (
        _with(autoscaling={"enabled": True}),
        "keda needs autoscaling.prometheus.serverAddress",
    ),
    "hub-local-with-id": ({"model": {"source": "iic/x", "hub": "local"}}, "needs model.source to be an absolute path"),
    "path-with-hub": ({"model": {"source": "/models/x", "hub": "modelscope"}}, "model.hub must be local or unset"),
    "demo-with-revision": ({"model": {"source": "builtin:demo", "revision": "v1"}}, "builtin:demo has no revision"),
    "int8-on-pytorch": (
        {"model": {"source": "x/y", "quantize": "int8"}},
        "model.quantize int8 needs model.runtime onnx",
    ),
    "whisper-from-modelscope": (
        {"model": {"source": "openai/whisper-small", "family": "whisper"}},
        "model.family whisper or glm-asr from a hub needs model.hub huggingface",
    ),
    "two-caches": (
        {"model": {"source": "x/y", "cache": {"pvcName": "m", "hostPath": "/data"}}},
        "set at most one of model.cache.pvcName",
    ),
    "no-model": ({}, "spec.model: Required value"),
    "bad-device": (_with(device="tpu"), 'spec.device: Unsupported value: "tpu"'),
    "bad-precision": (_with(precision="int4"), 'spec.precision: Unsupported value: "int4"'),
    "bad-family": ({"model": {"source": "x", "family": "kaldi"}}, 'spec.model.family: Unsupported value: "kaldi"'),
    "batch-too-big": (_with(batching={"maxBatchSize": 5000}), "maxBatchSize in body should be less than or equal"),
    "negative-replicas": (_with(replicas=-1), "spec.replicas in body should be greater than or equal to 0"),
    "replicas-not-integer": (_with(replicas="two"), "spec.replicas in body must be of type integer"),
    "min-replicas-negative": (
        _with(autoscaling={"minReplicas": -1}),
        "minReplicas in body should be greater than or equal",
    ),
    "hpa-scale-to-zero": (
        _with(autoscaling={"enabled": True, "engine": "hpa", "minReplicas": 0}),
        "minReplicas 0 needs engine keda",
    ),
    "unknown-field": (_with(colour="blue"), 'unknown field "spec.colour"'),
    "bad-quantity": (_with(resources={"shmSize": "lots"}), 'spec.resources.shmSize: Invalid value: "lots"'),
    "bad-engine": (_with(autoscaling={"engine": "vpa"}), 'spec.autoscaling.engine: Unsupported value: "vpa"'),
    "prometheus-not-url": (
        _with(autoscaling={"prometheus": {"serverAddress": "prom:9090"}}),
        "serverAddress in body should match '^https?://'",
    ),
    "relative-hostpath": ({"model": {"source": "x", "cache": {"hostPath": "data"}}}, "hostPath in body should match"),
    "bad-log-level": (_with(logging={"level": "verbose"}), 'spec.logging.level: Unsupported value: "verbose"'),
    "bad-service-type": (_with(service={"type": "Ingress"}), 'spec.service.type: Unsupported value: "Ingress"'),
    "log-never-rotated": (
        _with(logging={"rotation": {"maxFiles": 0}}),
        "spec.logging.rotation.maxFiles in body should be greater than or equal to 1",
    ),
    "service-port-0": (_with(service={"port": 0}), "spec.service.port in body should be greater than or equal to 1"),
}
BAD_NAMES = {"upper-case": "Upper", "too-long": "a" * 53, "leading-digit": "1abc"}
NAME_MESSAGE = "metadata.name must be a DNS-1035 label of at most 52 characters"


def test_crd_is_established_with_scale_and_status(kube: Kube) -> None:
    crd = json.loads(kube.kubectl("get", "crd", "asrdeployments.asr-platform.io", "-o", "json").stdout)
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions["Established"] == "True" and conditions["NamesAccepted"] == "True"
    served = {v["name"]: v for v in crd["spec"]["versions"]}
    assert set(served["v1alpha1"]["subresources"]) == {"status", "scale"}
    assert "asrd" in crd["spec"]["names"]["shortNames"]


@pytest.mark.parametrize("path", sorted((REPO / "examples").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_example_is_accepted(kube: Kube, ns: str, path: Any) -> None:
    obj = yaml.safe_load(path.read_text())
    obj["metadata"]["namespace"] = ns
    out = kube.apply(obj, "--dry-run=server")
    assert "created (server dry run)" in out.stdout


@pytest.mark.parametrize(("spec", "message"), INVALID.values(), ids=INVALID.keys())
def test_invalid_spec_is_rejected_with_the_users_message(kube: Kube, ns: str, spec: Any, message: str) -> None:
    out = kube.apply(_cr(spec, ns), "--dry-run=server", check=False)
    assert out.returncode != 0
    assert message in out.stderr, out.stderr


@pytest.mark.parametrize("name", BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_names_that_cannot_name_a_service_are_rejected(kube: Kube, ns: str, name: str) -> None:
    out = kube.apply(_cr(BASE, ns, name=name), "--dry-run=server", check=False)
    assert out.returncode != 0 and NAME_MESSAGE in out.stderr, out.stderr


def test_defaults_are_applied_server_side(kube: Kube, ns: str) -> None:
    kube.apply(_cr(BASE, ns))
    stored = kube.get("asrdeployment", "asr", ns)
    assert stored is not None
    schema = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    expected = apply_defaults(schema, _cr(BASE, ns))["spec"]
    assert stored["spec"] == expected
    assert stored["spec"]["device"] == "cuda" and stored["spec"]["replicas"] >= 1  # defaults a user relies on


def test_kubectl_get_prints_the_printer_columns(kube: Kube, ns: str) -> None:
    kube.apply(_cr({"model": {"source": "builtin:demo"}, "device": "cpu"}, ns, name="demo"))
    columns = CRD["spec"]["versions"][0]["additionalPrinterColumns"]
    out = kube.kubectl("get", "asrd", "-n", ns).stdout.splitlines()
    assert out[0].split() == ["NAME", *(c["name"].upper() for c in columns if not c.get("priority"))]
    assert out[1].split()[:3] == ["demo", "builtin:demo", "fp32"]
    wide = kube.kubectl("get", "asrd", "-n", ns, "-o", "wide").stdout.splitlines()  # priority-1 columns too
    assert wide[0].split() == ["NAME", *(c["name"].upper() for c in columns)]


def test_kubectl_scale_goes_through_the_scale_subresource(kube: Kube, ns: str) -> None:
    kube.apply(_cr({"model": {"source": "builtin:demo"}, "device": "cpu"}, ns, name="demo"))
    kube.kubectl("scale", "asrd", "demo", "-n", ns, "--replicas=3")
    assert kube.get("asrdeployment", "demo", ns)["spec"]["replicas"] == 3  # type: ignore[index]
    scale = json.loads(kube.kubectl("get", "asrd", "demo", "-n", ns, "--subresource=scale", "-o", "json").stdout)
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 3
