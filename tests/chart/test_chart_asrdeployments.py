"""ASRDeployments rendered from `asrDeployments` pass the CRD's CEL rules (x-kubernetes-validations) the way the
API server applies them: structural defaults first, then every rule at every level the object has."""

from __future__ import annotations

import copy
from typing import Any

import celpy
import pytest

_ENV = celpy.Environment()


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    if isinstance(value, dict):
        for name, sub in schema.get("properties", {}).items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                value[name] = apply_defaults(sub, value[name])
    elif isinstance(value, list) and "items" in schema:
        return [apply_defaults(schema["items"], item) for item in value]
    return value


def cel_violations(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    out = []
    for rule in schema.get("x-kubernetes-validations", []):
        result = _ENV.program(_ENV.compile(rule["rule"])).evaluate({"self": celpy.json_to_cel(value)})
        if result is not True and result != celpy.celtypes.BoolType(True):
            out.append(f"{path or '<root>'}: {rule.get('message', rule['rule'])} ({result!r})")
    if isinstance(value, dict):
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                out += cel_violations(sub, value[name], f"{path}.{name}")
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            out += cel_violations(schema["items"], item, f"{path}[{i}]")
    return out


@pytest.fixture(scope="module")
def asrd_schema(crd_schemas) -> dict[str, Any]:
    return crd_schemas[("asr-platform.io", "v1alpha1", "ASRDeployment")]


def check(schema: dict[str, Any], obj: dict[str, Any]) -> list[str]:
    return cel_violations(schema, apply_defaults(schema, copy.deepcopy(obj)))


def test_rendered_asrdeployments_pass_the_crd_cel_rules(rendered, scenario, asrd_schema):
    for obj in rendered[scenario]:
        if obj["kind"] == "ASRDeployment":
            assert check(asrd_schema, obj) == [], obj["metadata"]["name"]


def test_ha_scenario_has_asrdeployments_to_check(rendered):
    assert len([o for o in rendered["ha-values"] if o["kind"] == "ASRDeployment"]) == 2


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"model": {"source": "builtin:demo"}, "device": "cpu", "precision": "fp16"}, "fp16 needs device cuda"),
        # device defaults to cuda: exercises the structural defaulting too
        ({"model": {"source": "builtin:demo"}, "resources": {"gpus": 0}}, "device cuda needs resources.gpus"),
        (
            {"model": {"source": "x/y"}, "device": "cpu", "autoscaling": {"enabled": True, "engine": "keda"}},
            "needs autoscaling.prometheus.serverAddress",
        ),
        (
            {"model": {"source": "x/y", "cache": {"pvcName": "a", "hostPath": "/b"}}, "device": "cpu"},
            "at most one of",
        ),
    ],
)
def test_the_cel_check_catches_invalid_specs(render, asrd_schema, spec, message):
    # Proof the evaluator above is live: specs the API server would refuse are refused here too.
    objects = render({"asrDeployments": [{"name": "bad", "spec": spec}]})
    (obj,) = [o for o in objects if o["kind"] == "ASRDeployment"]
    violations = check(asrd_schema, obj)
    assert any(message in v for v in violations), violations


def test_readiness_test_uses_the_asrdeployments_service_port(render, asrd_schema):
    def readyz_url(values):
        objects = render(values)
        (pod,) = [o for o in objects if o["kind"] == "Pod" and o["metadata"]["name"].endswith("-test-readyz")]
        return pod["spec"]["containers"][0]["command"][-1]

    default_port = asrd_schema["properties"]["spec"]["properties"]["service"]["properties"]["port"]["default"]
    spec = {"model": {"source": "builtin:demo"}, "device": "cpu"}
    item = {"name": "a", "namespace": "speech", "spec": spec}
    assert readyz_url({"asrDeployments": [item]}) == f"http://a.speech.svc:{default_port}/readyz"
    ported = {**item, "spec": {**spec, "service": {"port": 9000}}}
    assert readyz_url({"asrDeployments": [ported]}) == "http://a.speech.svc:9000/readyz"
    assert readyz_url({"asrDeployments": [ported], "tests": {"port": 9100}}) == "http://a.speech.svc:9100/readyz"
