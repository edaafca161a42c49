"""The ASRDeployment CRD: valid Kubernetes, chart copy identical, defaults agree with the operator's spec model,
examples admitted, and the CEL rules accept/reject what they should (cel-python)."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest
import yaml
from asr_operator.spec import ASRDeploymentSpec, parse_spec
from crdtools import admit, apply_defaults, cel_rules
from harness import CHART_CRD_PATH, CRD_PATH, EXAMPLES, load_example


@pytest.mark.parametrize("version", ["1.30", "1.33"])
def test_crd_is_a_valid_customresourcedefinition(crd: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(crd, version, strict=True)


def test_chart_ships_a_byte_identical_copy() -> None:
    assert CHART_CRD_PATH.read_bytes() == CRD_PATH.read_bytes()


def test_names_scope_subresources_and_columns(crd: dict[str, Any]) -> None:
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "asrdeployments.asr-platform.io"
    assert spec["group"] == "asr-platform.io" and spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "ASRDeployment"
    assert spec["names"]["plural"] == "asrdeployments"
    assert spec["names"]["shortNames"] == ["asrd"]
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"]["status"] == {}
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Model"] == ".spec.model.source"
    assert columns["Precision"] == ".spec.precision"
    assert columns["Ready"] == ".status.readyReplicas"
    assert columns["Replicas"] == ".status.replicas"
    assert columns["Age"] == ".metadata.creationTimestamp"
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert {"phase", "conditions", "observedGeneration", "replicas", "readyReplicas", "endpoint", "selector"} <= set(
        status
    )
    condition = status["conditions"]["items"]["properties"]
    assert {"type", "status", "reason", "message", "lastTransitionTime", "observedGeneration"} <= set(condition)


def _walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, node)]
    for key, sub in (node.get("properties") or {}).items():
        out += _walk(sub, f"{path}.{key}")
    if "items" in node:
        out += _walk(node["items"], f"{path}[]")
    return out


def test_every_spec_field_is_described(crd_schema: dict[str, Any]) -> None:
    spec = crd_schema["properties"]["spec"]
    undocumented = [
        path
        for path, node in _walk(spec, "spec")
        if "[]" not in path and "description" not in node and path.count(".") <= 3
    ]
    assert undocumented == []


def test_crd_defaults_equal_the_spec_model_defaults(crd_schema: dict[str, Any]) -> None:
    """A minimal spec defaulted by the API server (CRD) and by the operator (pydantic) must mean the same."""
    spec_schema = crd_schema["properties"]["spec"]
    minimal = {"model": {"source": "iic/SenseVoiceSmall", "cache": {"emptyDir": {}}}}
    by_crd = apply_defaults(spec_schema, minimal)
    by_model = ASRDeploymentSpec.model_validate(minimal).model_dump(by_alias=True, exclude_none=True)

    # pydantic fills every optional map/list with {}/[]; the CRD leaves them absent.
    def prune(x: Any) -> Any:
        if isinstance(x, dict):
            pruned = {k: prune(v) for k, v in x.items()}
            return {k: v for k, v in pruned.items() if v not in ({}, []) or k == "emptyDir"}
        return x

    assert prune(by_model) == prune(by_crd)
    # And the model accepts the CRD-defaulted form as is.
    assert ASRDeploymentSpec.model_validate(by_crd) == ASRDeploymentSpec.model_validate(minimal)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_admitted_and_parse(path: Any, crd_schema: dict[str, Any]) -> None:
    obj = load_example(path)
    assert obj["apiVersion"] == "asr-platform.io/v1alpha1" and obj["kind"] == "ASRDeployment"
    defaulted, errors = admit(crd_schema, obj)
    assert errors == []
    parse_spec(defaulted["spec"])  # no InvalidSpec: the operator would reconcile it
    parse_spec(obj["spec"])  # same without the API server's defaulting


def test_examples_cover_demo_keda_and_hpa() -> None:
    specs = {p.name: load_example(p)["spec"] for p in EXAMPLES}
    assert specs["demo-cpu.yaml"]["model"]["source"] == "builtin:demo"
    assert specs["demo-cpu.yaml"]["device"] == "cpu"
    assert specs["sensevoice-gpu-keda.yaml"]["autoscaling"]["engine"] == "keda"
    assert specs["paraformer-hpa.yaml"]["autoscaling"]["engine"] == "hpa"
    assert specs["demo-scale-to-zero.yaml"]["autoscaling"]["minReplicas"] == 0


BASE = {"model": {"source": "iic/SenseVoiceSmall"}}


def _cr(spec: dict[str, Any], name: str = "asr") -> dict[str, Any]:
    return {
        "apiVersion": "asr-platform.io/v1alpha1",
        "kind": "ASRDeployment",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": spec,
    }


def _with(**changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        node = spec
        *parents, last = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return spec


KEDA_OK = {"enabled": True, "engine": "keda", "prometheus": {"serverAddress": "http://prom:9090"}}

VALID = {
    "minimal": BASE,
    "demo-cpu": {"model": {"source": "builtin:demo"}, "device": "cpu"},
    "cpu-bf16": _with(device="cpu", precision="bf16"),
    "cuda-fp16-1gpu": _with(precision="fp16", resources__gpus=1),
    "cpu-explicit-0-gpus": _with(device="cpu", resources__gpus=0),
    "local-path-no-hub": {"model": {"source": "/models/sensevoice"}},
    "local-path-hub-local": {"model": {"source": "/models/sensevoice", "hub": "local"}},
    "keda-with-prometheus": _with(autoscaling=KEDA_OK),
    "hpa-no-prometheus": _with(autoscaling={"enabled": True, "engine": "hpa", "minReplicas": 2, "maxReplicas": 2}),
    "disabled-autoscaling-any-bounds": _with(autoscaling={"enabled": False, "minReplicas": 5, "maxReplicas": 2}),
    "one-cache": {"model": {"source": "x/y", "cache": {"pvcName": "models"}}},
    "onnx-int8": {"model": {"source": "x/y", "runtime": "onnx", "quantize": "int8"}, "device": "cpu"},
    "whisper-from-huggingface": {
        "model": {"source": "openai/whisper-small", "family": "whisper", "hub": "huggingface"}
    },
    "whisper-local": {"model": {"source": "/models/whisper-small", "family": "whisper"}},
    "glm-asr-from-huggingface": {
        "model": {"source": "zai-org/GLM-ASR-Nano-2512", "family": "glm-asr", "hub": "huggingface"}
    },
    "keda-scale-to-zero": _with(autoscaling={**KEDA_OK, "minReplicas": 0}),
    "eight-gpus": _with(resources__gpus=8),  # one inference worker per GPU
    "disabled-autoscaling-min-zero": _with(autoscaling={"enabled": False, "engine": "hpa", "minReplicas": 0}),
}

INVALID_CEL = {
    "fp16-on-cpu": (_with(device="cpu", precision="fp16"), "fp16 needs device cuda"),
    "gpus-on-cpu": (_with(device="cpu", resources__gpus=1), "gpus > 0 needs device cuda"),
    "cuda-zero-gpus": (_with(resources__gpus=0), "device cuda needs resources.gpus"),
    "min-above-max": (
        _with(autoscaling={"enabled": True, "engine": "hpa", "minReplicas": 5, "maxReplicas": 2}),
        "minReplicas must be <= autoscaling.maxReplicas",
    ),
    "hpa-scale-to-zero": (
        _with(autoscaling={"enabled": True, "engine": "hpa", "minReplicas": 0}),
        "minReplicas 0 needs engine keda",
    ),
    "keda-without-prometheus": (_with(autoscaling={"enabled": True}), "keda needs"),
    "keda-empty-prometheus": (_with(autoscaling={"enabled": True, "prometheus": {}}), "keda needs"),
    "hub-local-with-id": ({"model": {"source": "iic/x", "hub": "local"}}, "needs model.source to be an absolute"),
    "path-with-hub": ({"model": {"source": "/models/x", "hub": "modelscope"}}, "model.hub must be local"),
    "demo-with-revision": ({"model": {"source": "builtin:demo", "revision": "v1"}}, "no revision"),
    "int8-on-pytorch": ({"model": {"source": "x/y", "quantize": "int8"}}, "quantize int8 needs model.runtime onnx"),
    "whisper-from-modelscope": (
        {"model": {"source": "openai/whisper-small", "family": "whisper"}},
        "from a hub needs model.hub huggingface",
    ),
    "two-caches": (
        {"model": {"source": "x/y", "cache": {"pvcName": "m", "hostPath": "/data"}}},
        "at most one of model.cache",
    ),
}


@pytest.mark.parametrize("spec", VALID.values(), ids=VALID.keys())
def test_cel_accepts(spec: dict[str, Any], crd_schema: dict[str, Any]) -> None:
    defaulted, errors = admit(crd_schema, _cr(spec))
    assert errors == []
    parse_spec(defaulted["spec"])  # the operator's own re-check of the CEL rules agrees


@pytest.mark.parametrize(("spec", "message"), INVALID_CEL.values(), ids=INVALID_CEL.keys())
def test_cel_rejects(spec: dict[str, Any], message: str, crd_schema: dict[str, Any]) -> None:
    defaulted, errors = admit(crd_schema, _cr(spec))
    assert len(errors) == 1 and message in errors[0], errors
    # The operator refuses the same object if it ever gets one (e.g. created before the CRD had the rule).
    from asr_operator.spec import InvalidSpec

    with pytest.raises(InvalidSpec):
        parse_spec(defaulted["spec"])


@pytest.mark.parametrize("name", ["Upper", "a" * 53, "1abc", "ab-"])
def test_cel_rejects_names_that_cannot_name_a_service(name: str, crd_schema: dict[str, Any]) -> None:
    _, errors = admit(crd_schema, _cr(BASE, name=name))
    assert errors and "DNS-1035" in errors[0]


def test_every_cel_rule_is_exercised(crd_schema: dict[str, Any]) -> None:
    """Each rule in the CRD fails for at least one of the INVALID cases (no dead rules, no untested ones)."""
    rules = {r["rule"] for _, r, _ in cel_rules(crd_schema, admit(crd_schema, _cr(BASE))[0])}
    rules |= {r["rule"] for _, r, _ in cel_rules(crd_schema, admit(crd_schema, _cr(VALID["one-cache"]))[0])}
    messages = {
        r["message"]: r["rule"] for _, r, _ in cel_rules(crd_schema, admit(crd_schema, _cr(VALID["one-cache"]))[0])
    }
    failing = set()
    for spec, _ in INVALID_CEL.values():
        _, errors = admit(crd_schema, _cr(spec))
        failing |= {e.split(": ", 1)[1] for e in errors}
    _, errors = admit(crd_schema, _cr(BASE, name="Bad"))
    failing |= {e.split(": ", 1)[1] for e in errors}
    assert {messages[m] for m in failing} == rules


SCHEMA_INVALID = {
    "no-model": {},
    "bad-device": _with(device="tpu"),
    "bad-precision": _with(precision="int4"),  # int8 is model.quantize (runtime onnx), not a precision
    "bad-runtime": {"model": {"source": "x", "runtime": "tensorrt"}},
    "bad-family": {"model": {"source": "x", "family": "kaldi"}},
    "batch-too-big": _with(batching={"maxBatchSize": 5000}),
    "negative-replicas": _with(replicas=-1),
    "seventeen-gpus": _with(resources__gpus=17),
    "min-replicas-negative": _with(autoscaling={"minReplicas": -1}),
    "empty-scaler-address": _with(autoscaling={**KEDA_OK, "minReplicas": 0, "httpAddon": {"scalerAddress": ""}}),
    "unknown-field": _with(colour="blue"),
    "bad-quantity": _with(resources={"shmSize": "lots"}),
    "bad-engine": _with(autoscaling={"engine": "vpa"}),
    "prometheus-not-url": _with(autoscaling={"prometheus": {"serverAddress": "prom:9090"}}),
    "relative-hostpath": {"model": {"source": "x", "cache": {"hostPath": "data"}}},
}


@pytest.mark.parametrize("spec", SCHEMA_INVALID.values(), ids=SCHEMA_INVALID.keys())
def test_schema_rejects(spec: dict[str, Any], crd_schema: dict[str, Any]) -> None:
    _, errors = admit(crd_schema, _cr(spec))
    assert errors


def test_crd_yaml_is_a_single_document() -> None:
    assert len(list(yaml.safe_load_all(CRD_PATH.read_text()))) == 1
