"""The chart's crds/ folder: identical to the repository's crds/, what Helm sees, and valid CRDs."""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml
from kopf._cogs.structs import references  # the selectors kopf itself uses for peering

EXPECTED_CRDS = {
    "asrdeployments.asr-platform.io",
    "kopfpeerings.kopf.dev",
    "clusterkopfpeerings.kopf.dev",
}


def test_chart_crds_are_byte_identical_to_the_repository_crds(repo_dir, chart_dir):
    repo_files = {p.name: p.read_bytes() for p in (repo_dir / "crds").iterdir() if p.is_file()}
    chart_files = {p.name: p.read_bytes() for p in (chart_dir / "crds").iterdir() if p.is_file()}
    assert sorted(chart_files) == sorted(repo_files)
    for name, data in repo_files.items():
        assert chart_files[name] == data, f"charts/asr-platform/crds/{name} differs from crds/{name}"


def test_helm_installs_exactly_the_expected_crds(chart):
    names = set()
    for entry in chart.crds:
        for doc in yaml.safe_load_all(entry["data"]):
            if doc:
                assert doc["kind"] == "CustomResourceDefinition", entry["filename"]
                names.add(doc["metadata"]["name"])
    assert names == EXPECTED_CRDS


def crd_docs(repo_dir):
    for path in sorted((repo_dir / "crds").glob("*.yaml")):
        yield from (doc for doc in yaml.safe_load_all(path.read_text()) if doc)


@pytest.mark.parametrize("kube_version", ["1.30", "1.33"])
def test_crds_are_valid_customresourcedefinitions(repo_dir, kube_version):
    docs = list(crd_docs(repo_dir))
    assert {d["metadata"]["name"] for d in docs} == EXPECTED_CRDS
    for doc in docs:
        kubernetes_validate.validate(doc, kube_version, strict=True)


def test_peering_crds_are_the_ones_kopf_looks_for(repo_dir):
    crds = {d["metadata"]["name"]: d["spec"] for d in crd_docs(repo_dir)}
    for selector, scope in (
        (references.CLUSTER_PEERINGS_K, "Cluster"),
        (references.NAMESPACED_PEERINGS_K, "Namespaced"),
    ):
        group, version = selector.group, selector.version
        spec = crds[f"{selector.any_name}.{group}"]
        assert spec["group"] == group and spec["scope"] == scope
        assert spec["names"]["plural"] == selector.any_name
        (served,) = spec["versions"]
        assert served["name"] == version and served["served"] and served["storage"]
        # kopf writes its peers under .status: the schema must keep unknown fields there.
        status = served["schema"]["openAPIV3Schema"]["properties"]["status"]
        assert status["x-kubernetes-preserve-unknown-fields"] is True
