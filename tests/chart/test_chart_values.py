"""values.yaml, values.schema.json and `helm lint --strict`."""

from __future__ import annotations

import json
import re
from typing import Any

import helm_python
import jsonschema
import pytest
import yaml

KUBE_VERSIONS = ["v1.30.0", "v1.33.0"]


def lint_problems(report: dict[str, Any]) -> list[Any]:
    """Lint errors plus every message of severity warning (2) or error (3); info (1) is advice."""
    return list(report["errors"]) + [m for m in report["messages"] if m["severity"] >= 2]


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_strict_lint_is_clean(chart_dir, scenario, scenario_values, kube_version):
    report = helm_python.lint(
        chart_dir, scenario_values(scenario), strict=True, kube_version=kube_version, namespace="asr-system"
    )
    assert report["total_charts_linted"] == 1
    assert lint_problems(report) == []


def test_strict_lint_reports_broken_values(chart_dir):
    # The clean-lint test above would be worthless if lint did not schema-check the values it renders with.
    # (Helm's lint deliberately tolerates `fail` in templates, so template guards are tested by rendering.)
    report = helm_python.lint(chart_dir, {"operator": {"replicaz": 1}}, strict=True, kube_version="v1.33.0")
    assert any("replicaz" in str(problem) for problem in lint_problems(report)), report


def test_schema_accepts_defaults_and_every_scenario(chart, scenario, scenario_values):
    chart.validate_schema(chart.merge_values(scenario_values(scenario)))


BAD_VALUES = [
    ({"unknownTopLevel": True}, "additional properties"),
    ({"operator": {"replicaCount": 2}}, "additional properties"),
    ({"operator": {"replicas": 0}}, "minimum"),
    ({"operator": {"replicas": "2"}}, "integer"),
    ({"operator": {"watchNamespaces": "speech"}}, "array"),
    ({"operator": {"watchNamespaces": ["Speech_NS"]}}, "pattern"),
    ({"operator": {"watchNamespaces": ["speech", "speech"]}}, "are equal"),
    ({"operator": {"logLevel": "verbose"}}, "one of"),
    ({"operator": {"livenessPort": 70000}}, "maximum"),
    ({"operator": {"peering": {"enabled": "yes"}}}, "boolean"),
    ({"operator": {"image": {"pullPolicy": "Sometimes"}}}, "one of"),
    ({"operator": {"image": {"digest": "latest"}}}, "pattern"),
    ({"operator": {"resources": {"requests": {"cpu": "lots"}}}}, "pattern"),
    ({"operator": {"resources": {"requestz": {}}}}, "additional properties"),
    ({"operator": {"tolerations": [{"key": "a", "operator": "Maybe"}]}}, "one of"),
    ({"operator": {"podDisruptionBudget": {"maxUnavailable": 0}}}, "oneOf"),
    ({"inference": {"image": {"pullPolicy": "Always"}}}, "additional properties"),
    ({"metrics": {"port": 0}}, "minimum"),
    ({"metrics": {"serviceMonitor": {"interval": "often"}}}, "pattern"),
    ({"dashboard": {"enabled": True, "folder": "ASR"}}, "additional properties"),
    ({"asrDeployments": [{"name": "x"}]}, "missing property 'spec'"),
    ({"asrDeployments": [{"name": "1bad", "spec": {}}]}, "pattern"),
    ({"asrDeployments": [{"name": "a" * 53, "spec": {}}]}, "maxLength"),
    ({"asrDeployments": [{"name": "ok", "spec": {}, "replicas": 2}]}, "additional properties"),
    ({"tests": {"url": "sensevoice:8000"}}, "pattern"),
    ({"serviceAccount": {"automount": True}}, "additional properties"),
]


@pytest.mark.parametrize(("values", "message"), BAD_VALUES, ids=[json.dumps(v) for v, _ in BAD_VALUES])
def test_schema_rejects_bad_values(chart, values, message):
    with pytest.raises(helm_python.HelmValuesError, match=re.escape(message)):
        chart.validate_schema(chart.merge_values(values))
    # An install (render) refuses them too.
    with pytest.raises(helm_python.HelmError):
        chart.render(values, name="asr", namespace="asr-system")


def walk_schema(node: Any, path: str = "#"):
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from walk_schema(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk_schema(value, f"{path}/{i}")


# Objects whose contents are Kubernetes' or the CRD's, deliberately free-form or open.
OPEN_OBJECTS = {
    "#/properties/operator/properties/affinity",  # core/v1 Affinity, passed through
    "#/properties/operator/properties/extraEnv/items",  # core/v1 EnvVar (value / valueFrom)
    "#/properties/asrDeployments/items/properties/spec",  # validated by the CRD on apply
    "#/properties/global",  # Helm's values shared with a parent chart: whatever the parent sets
}


def test_global_values_of_a_parent_chart_are_accepted(chart):
    """A subchart receives its parent's `global`: a closed schema without it makes the chart unusable as one."""
    chart.validate_schema(chart.merge_values({"global": {"imageRegistry": "registry.example", "any": {"x": 1}}}))


def test_schema_closes_every_object_it_defines(chart_dir):
    schema = json.loads((chart_dir / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    open_objects = set()
    for path, node in walk_schema(schema):
        if node.get("type") != "object" or path.endswith(("/properties", "/definitions")):
            continue
        if node.get("additionalProperties", True) is True:
            open_objects.add(path)
    assert open_objects == OPEN_OBJECTS
    assert schema["additionalProperties"] is False


def test_values_yaml_keys_all_appear_in_the_schema(chart_dir):
    # Python's jsonschema as a second opinion on the same file: additionalProperties false catches any key
    # values.yaml has and the schema forgot.
    schema = json.loads((chart_dir / "values.schema.json").read_text())
    jsonschema.Draft7Validator(schema).validate(yaml.safe_load((chart_dir / "values.yaml").read_text()))


KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w.-]*):(?P<rest>.*)$")


def undocumented_keys(text: str) -> list[str]:
    """helm-docs rule: every value needs a `# --` comment on itself or on an ancestor key."""
    lines = text.splitlines()
    stack: list[tuple[int, str, bool]] = []  # (indent, key, documented)
    missing = []
    for i, line in enumerate(lines):
        match = KEY_LINE.match(line)
        if not match:
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        j = i - 1
        while j >= 0 and lines[j].strip().startswith("#") and not lines[j].strip().startswith("# --"):
            j -= 1
        documented = j >= 0 and lines[j].strip().startswith("# --")
        inherited = any(doc for _, _, doc in stack)
        path = ".".join([k for _, k, _ in stack] + [match["key"]])
        value = match["rest"].split("#")[0].strip()
        if value and not documented and not inherited:
            missing.append(path)
        stack.append((indent, match["key"], documented))
    return missing


def test_every_value_is_documented(chart_dir):
    text = (chart_dir / "values.yaml").read_text()
    assert undocumented_keys(text) == []
    # The checker itself finds an undocumented value.
    assert undocumented_keys("a:\n  # -- doc\n  b: 1\n  c: 2\n") == ["a.c"]


def test_readme_values_table_lists_every_value(chart_dir):
    readme = (chart_dir / "README.md").read_text()

    def leaves(node: Any, prefix: str = "") -> list[str]:
        if isinstance(node, dict) and node:
            return [leaf for k, v in node.items() for leaf in leaves(v, f"{prefix}{k}.")]
        return [prefix.rstrip(".")]

    values = yaml.safe_load((chart_dir / "values.yaml").read_text())
    missing = [key for key in leaves(values) if f"| `{key}` |" not in readme and not covered(key, readme)]
    assert missing == []


def test_readme_covers_install_crd_upgrade_and_uninstall(chart_dir):
    readme = (chart_dir / "README.md").read_text()
    for heading in ("## Install", "## Upgrade", "## Uninstall", "## Values"):
        assert heading in readme
    upgrade = readme.split("## Upgrade")[1].split("## Uninstall")[0]
    # Helm never upgrades CRDs: the steps apply the chart's crds/ before `helm upgrade`.
    assert upgrade.index("kubectl apply") < upgrade.index("helm upgrade")
    assert "crds/" in upgrade


def covered(key: str, readme: str) -> bool:
    """A map documented as a whole (e.g. `operator.resources`) covers its children."""
    parts = key.split(".")
    return any(f"| `{'.'.join(parts[:n])}` |" in readme for n in range(1, len(parts)))
