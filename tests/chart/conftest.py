"""Fixtures for the Helm chart tests: the chart loaded with the real Helm engine (helm-python-sdk), rendered
offline for each scenario under charts/asr-platform/ci/, and the rendered objects parsed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "charts" / "asr-platform"
CI_DIR = CHART_DIR / "ci"
RELEASE = "asr"
NAMESPACE = "asr-system"

# Scenario name -> values file under ci/ (None: the chart's defaults).
SCENARIOS: dict[str, Path | None] = {"default": None} | {p.stem: p for p in sorted(CI_DIR.glob("*.yaml"))}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Any test taking a `scenario` argument runs once per scenario (defaults + every ci/*.yaml)."""
    if "scenario" in metafunc.fixturenames:
        metafunc.parametrize("scenario", list(SCENARIOS))


@pytest.fixture(autouse=True)
def _isolated_helm_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point everything Helm could read or write at private, empty places: an empty kubeconfig (nothing here
    may reach a cluster) and private Helm cache/config/data dirs. Restored after each test."""
    base = tmp_path_factory.getbasetemp() / "helm-env"
    base.mkdir(exist_ok=True)
    kubeconfig = base / "kubeconfig"
    kubeconfig.touch()
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        monkeypatch.setenv(var, str(base / var.lower()))


@pytest.fixture(scope="session")
def chart() -> Iterator[helm_python.Chart]:
    with helm_python.Chart.load(CHART_DIR) as loaded:
        yield loaded


def load_values(scenario: str) -> dict[str, Any]:
    path = SCENARIOS[scenario]
    return {} if path is None else helm_python.values_from_yaml(path.read_text())


def parse_manifests(manifests: dict[str, str]) -> list[dict[str, Any]]:
    """Rendered template files -> Kubernetes objects (NOTES.txt and empty documents dropped)."""
    objects: list[dict[str, Any]] = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                assert isinstance(doc, dict), f"{path}: a rendered document is not a mapping: {doc!r}"
                doc.setdefault("metadata", {})
                objects.append(doc)
    return objects


@pytest.fixture(scope="session")
def render(chart: helm_python.Chart) -> Callable[..., list[dict[str, Any]]]:
    """render(values) -> the objects of an install of release `asr` into namespace `asr-system`."""

    def _render(values: dict[str, Any] | None = None, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
        return parse_manifests(chart.render(values or {}, name=RELEASE, namespace=namespace, is_install=True))

    return _render


@pytest.fixture(scope="session")
def rendered(render: Callable[..., list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Objects of every scenario, rendered once per session."""
    return {name: render(load_values(name)) for name in SCENARIOS}


@pytest.fixture(scope="session")
def notes(chart: helm_python.Chart) -> dict[str, str]:
    """NOTES.txt of every scenario."""
    out = {}
    for name in SCENARIOS:
        manifests = chart.render(load_values(name), name=RELEASE, namespace=NAMESPACE, is_install=True)
        out[name] = next(text for path, text in manifests.items() if path.endswith("NOTES.txt"))
    return out


@pytest.fixture(scope="session")
def crd_schemas() -> dict[tuple[str, str, str], dict[str, Any]]:
    """(group, version, kind) -> openAPIV3Schema of every CRD in the repo's crds/."""
    schemas = {}
    for path in sorted((REPO / "crds").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for version in spec["versions"]:
                key = (spec["group"], version["name"], spec["names"]["kind"])
                schemas[key] = version["schema"]["openAPIV3Schema"]
    return schemas


@pytest.fixture(scope="session")
def scenario_values() -> Callable[[str], dict[str, Any]]:
    """scenario_values(name) -> the values file of that scenario ({} for the defaults)."""
    return load_values


@pytest.fixture(scope="session")
def chart_dir() -> Path:
    return CHART_DIR


@pytest.fixture(scope="session")
def repo_dir() -> Path:
    return REPO
