"""The pure parts of the local cluster's KEDA HTTP add-on setup (tools/cluster/http_addon.py, service_hosts.py): the
add-on's RBAC named as its kustomization names it, and the hosts file that stands in for cluster DNS. The add-on
itself runs in e2e/test_scale_to_zero.py."""

from __future__ import annotations

import importlib
import sys
from typing import Any

from localkube import REPO, load_cluster_module


def _tool(name: str) -> Any:
    """A tools/cluster script as a module; what it imports as `cluster` is cluster.py, only while it loads."""
    added = "cluster" not in sys.modules
    sys.modules.setdefault("cluster", load_cluster_module())
    sys.path.insert(0, str(REPO / "tools" / "cluster"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)
        if added:
            del sys.modules["cluster"]


def test_rbac_named_like_the_add_ons_kustomization() -> None:
    http_addon = _tool("http_addon")
    binding = {
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "interceptor"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "interceptor"},
        "subjects": [{"kind": "ServiceAccount", "name": "interceptor"}],
    }
    out = http_addon.kustomized(binding)
    assert out["metadata"] == {"name": "keda-add-ons-http-interceptor"}  # cluster-scoped: no namespace
    assert out["roleRef"]["name"] == "keda-add-ons-http-interceptor"
    # the user the interceptor's client certificate names (pki.py): system:serviceaccount:keda:<this>
    assert out["subjects"] == [{"kind": "ServiceAccount", "name": "keda-add-ons-http-interceptor", "namespace": "keda"}]
    role = http_addon.kustomized({"kind": "Role", "metadata": {"name": "scaler"}, "rules": []})
    assert role["metadata"] == {"name": "keda-add-ons-http-scaler", "namespace": "keda"}


def test_hosts_file_names_each_service_like_cluster_dns() -> None:
    service_hosts = _tool("service_hosts")
    services = [
        {"metadata": {"name": "idle", "namespace": "e2e"}, "spec": {"clusterIP": "10.96.0.7"}},
        {"metadata": {"name": "headless", "namespace": "e2e"}, "spec": {"clusterIP": "None"}},
        {"metadata": {"name": "external", "namespace": "e2e"}, "spec": {"type": "ExternalName"}},
    ]
    assert service_hosts.hosts_lines(services) == ["10.96.0.7 idle.e2e idle.e2e.svc idle.e2e.svc.cluster.local"]
