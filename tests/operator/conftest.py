"""Fixtures of the operator tests (helpers live in harness.py)."""

from __future__ import annotations

import pathlib
import sys
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(pathlib.Path(__file__).parent))  # harness.py, crdtools.py (no package here)

from harness import CRD_PATH, Cluster, make_cluster


@pytest.fixture(scope="session")
def crd() -> dict[str, Any]:
    return dict(yaml.safe_load(CRD_PATH.read_text()))


@pytest.fixture(scope="session")
def crd_schema(crd: dict[str, Any]) -> dict[str, Any]:
    return dict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


@pytest.fixture()
def cluster(kmock: Any, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Cluster:
    """kmock emulating the API server (CRD + child resources declared) and KUBECONFIG pointing at it."""
    return make_cluster(kmock, tmp_path, monkeypatch)
