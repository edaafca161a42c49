"""Pod hardening and RBAC of every rendered scenario."""

from __future__ import annotations

from typing import Any

import pytest

POD_KINDS = {"Pod": ("spec",), "Deployment": ("spec", "template", "spec")}
RBAC_FIELDS = ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs")
WRITE = {"get", "list", "watch", "create", "update", "patch", "delete"}

# Exactly what the operator calls, as (apiGroup, resource) -> verbs it must hold in every watched namespace
# (cluster-wide mode: everywhere): kopf lists/watches and patches annotations; the operator GETs, POSTs,
# merge-PATCHes and DELETEs (never PUT); kopf.adopt's blockOwnerDeletion needs update on
# asrdeployments/finalizers under OwnerReferencesPermissionEnforcement; kopf posts core/v1 events only.
CHILD_VERBS = {"get", "list", "watch", "create", "patch", "delete"}
NAMESPACED_NEEDS: dict[tuple[str, str], set[str]] = {
    ("asr-platform.io", "asrdeployments"): {"get", "list", "watch", "patch"},
    ("asr-platform.io", "asrdeployments/status"): {"patch"},
    ("asr-platform.io", "asrdeployments/finalizers"): {"update"},
    ("apps", "deployments"): CHILD_VERBS,
    ("", "services"): CHILD_VERBS,
    ("", "configmaps"): CHILD_VERBS,
    ("policy", "poddisruptionbudgets"): CHILD_VERBS,
    ("autoscaling", "horizontalpodautoscalers"): CHILD_VERBS,
    ("keda.sh", "scaledobjects"): CHILD_VERBS,
    ("http.keda.sh", "httpscaledobjects"): CHILD_VERBS,
    ("monitoring.coreos.com", "servicemonitors"): CHILD_VERBS,
    ("", "events"): {"create", "list"},  # list: the kubelet's warnings about a pod stuck creating
    ("", "pods"): {"list", "watch"},  # read only: why the pods are not ready, for the status
}
# kopf's own cluster-scoped reads, in both modes.
CLUSTER_NEEDS: dict[tuple[str, str], set[str]] = {
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"get", "list", "watch"},
    ("", "namespaces"): {"list", "watch"},
}
PEERING_VERBS = {"get", "list", "watch", "patch"}


def pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    specs = []
    for obj in objects:
        if obj["kind"] in POD_KINDS:
            spec = obj
            for key in POD_KINDS[obj["kind"]]:
                spec = spec[key]
            specs.append((f"{obj['kind']}/{obj['metadata']['name']}", spec))
    return specs


def test_every_pod_is_hardened(rendered, scenario):
    specs = pod_specs(rendered[scenario])
    assert {name.split("/")[0] for name, _ in specs} == {"Deployment", "Pod"}  # operator + helm test pods
    for name, spec in specs:
        pod_ctx = spec["securityContext"]
        assert pod_ctx["runAsNonRoot"] is True, name
        assert pod_ctx["runAsUser"] == 10001, name
        assert pod_ctx["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec.get("hostNetwork") is not True and spec.get("hostPID") is not True, name
        for container in spec["containers"] + spec.get("initContainers", []):
            ctx = container["securityContext"]
            where = f"{name} container {container['name']}"
            assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] == 10001, where
            assert ctx["readOnlyRootFilesystem"] is True, where
            assert ctx["allowPrivilegeEscalation"] is False, where
            assert ctx.get("privileged", False) is False, where
            assert ctx["capabilities"] == {"drop": ["ALL"]}, where
            assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert container.get("resources", {}).get("limits", {}).get("memory"), where


def test_only_the_operator_pod_mounts_a_service_account_token(rendered, scenario):
    objects = rendered[scenario]
    for obj in objects:
        if obj["kind"] == "ServiceAccount":
            assert obj["automountServiceAccountToken"] is False
    for name, spec in pod_specs(objects):
        if name.startswith("Deployment/"):
            assert spec["automountServiceAccountToken"] is True, name
            assert spec["serviceAccountName"] == "asr-asr-platform", name
        else:
            assert spec["automountServiceAccountToken"] is False, name
            assert "serviceAccountName" not in spec, name


def rbac_objects(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in {"ClusterRole", "Role"}]


def test_no_rbac_rule_has_a_wildcard_or_touches_secrets(rendered, scenario):
    roles = rbac_objects(rendered[scenario])
    assert roles
    for role in roles:
        for rule in role["rules"]:
            for field in RBAC_FIELDS:
                for value in rule.get(field, []):
                    assert "*" not in value, f"{role['kind']}/{role['metadata']['name']}: {field} {value!r}"
            assert "secrets" not in rule["resources"]
            assert "nonResourceURLs" not in rule and "resourceNames" not in rule
            assert set(rule["verbs"]) <= WRITE, rule  # no escalate, bind, impersonate, deletecollection


def grants(roles: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for role in roles:
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def bound_roles(objects: list[dict[str, Any]], namespace: str | None) -> list[dict[str, Any]]:
    """Roles bound to the operator's ServiceAccount that apply in `namespace` (None: cluster scope)."""
    by_ref = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in rbac_objects(objects)}
    roles = []
    for binding in objects:
        if binding["kind"] not in {"ClusterRoleBinding", "RoleBinding"}:
            continue
        if binding["kind"] == "RoleBinding" and binding["metadata"]["namespace"] != namespace:
            continue
        assert {"kind": "ServiceAccount", "name": "asr-asr-platform", "namespace": "asr-system"} in binding["subjects"]
        ref = binding["roleRef"]
        ref_ns = binding["metadata"]["namespace"] if ref["kind"] == "Role" else None
        roles.append(by_ref[(ref["kind"], ref_ns, ref["name"])])
    return roles


@pytest.mark.parametrize("cluster_wide", ["default", "cluster-wide-values", "ha-values"])
def test_cluster_wide_rbac_covers_what_the_operator_touches(rendered, cluster_wide):
    objects = rendered[cluster_wide]
    assert not [o for o in objects if o["kind"] in {"Role", "RoleBinding"}]
    granted = grants(bound_roles(objects, None))
    needs = NAMESPACED_NEEDS | CLUSTER_NEEDS | {("kopf.dev", "clusterkopfpeerings"): PEERING_VERBS}
    for key, verbs in needs.items():
        assert granted.get(key, set()) == verbs, f"{key}: has {granted.get(key)}, the code calls {verbs}"
    assert set(granted) == set(needs), f"unexpected grants: {set(granted) - set(needs)}"


def test_namespaced_rbac_is_per_namespace_plus_kopf_cluster_reads(rendered):
    objects = rendered["namespaced-values"]
    cluster_grants = grants(bound_roles(objects, None))
    # Cluster scope: only kopf's discovery reads, nothing the operator writes.
    assert cluster_grants == CLUSTER_NEEDS
    for namespace in ("speech", "speech-staging"):
        granted = grants(bound_roles(objects, namespace))
        needs = NAMESPACED_NEEDS | {("kopf.dev", "kopfpeerings"): PEERING_VERBS}
        for key, verbs in needs.items():
            assert granted.get(key, set()) == verbs, f"{namespace} {key}: has {granted.get(key)}, calls {verbs}"
        assert set(granted) - set(CLUSTER_NEEDS) == set(needs)
    # A namespace the operator does not watch gets nothing beyond the cluster-scoped reads.
    assert grants(bound_roles(objects, "kube-system")) == CLUSTER_NEEDS


def test_rbac_can_be_disabled(render):
    objects = render({"rbac": {"create": False}})
    assert not [o for o in objects if "Role" in o["kind"]]
