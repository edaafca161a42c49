"""The operator as a local process against the real control plane, authenticated as the chart's ServiceAccount:
examples → Deployment → ReplicaSet → Pods on the right fake nodes → Ready → status; drift repair; garbage
collection; autoscaler switches; restart mid-reconcile; two peered replicas."""

from __future__ import annotations

import copy
import json
import signal
import time
from typing import Any

import pytest
from localkube import (
    Kube,
    StartOperator,
    example_in,
    operator_writes,
    owned_by,
    ready_status,
    wait_for,
    wait_ready,
)

GPU_NODES = {"kwok-gpu-0", "kwok-gpu-1"}
EXAMPLES = ["demo-cpu", "paraformer-hpa", "sensevoice-gpu-keda"]


def _uid(kube: Kube, namespace: str, name: str) -> str:
    cr = kube.get("asrdeployment", name, namespace)
    assert cr is not None
    return str(cr["metadata"]["uid"])


def _pods_of(kube: Kube, namespace: str, deployment: dict[str, Any]) -> tuple[list[dict[str, Any]], list[Any]]:
    replicasets = owned_by(kube, namespace, "replicaset", deployment["metadata"]["uid"])
    pods = [p for rs in replicasets for p in owned_by(kube, namespace, "pod", rs["metadata"]["uid"])]
    return replicasets, pods


def _desired_replicas(spec: dict[str, Any]) -> int:
    auto = spec.get("autoscaling") or {}
    replicas = int(spec.get("replicas", 1))
    if auto.get("enabled"):
        replicas = min(max(replicas, int(auto.get("minReplicas", 1))), int(auto.get("maxReplicas", replicas)))
    return replicas


def _pod_ready(pod: dict[str, Any]) -> bool:
    conditions = {c["type"]: c["status"] for c in (pod.get("status") or {}).get("conditions") or []}
    return pod.get("status", {}).get("phase") == "Running" and conditions.get("Ready") == "True"


@pytest.mark.parametrize(
    "example",
    [
        "demo-cpu",
        "paraformer-hpa",  # a GPU pod without tolerations in its spec: the operator tolerates the GPU taint
        "sensevoice-gpu-keda",
    ],
)
def test_example_runs_on_the_right_nodes_and_reports_ready(
    platform: Kube, ns: str, start_operator: StartOperator, example: str
) -> None:
    start_operator()
    obj = example_in(platform, ns, example)
    name, spec = obj["metadata"]["name"], obj["spec"]
    platform.apply(obj)
    cr = wait_ready(platform, ns, name)

    desired = _desired_replicas(spec)
    (deployment,) = owned_by(platform, ns, "deployment", cr["metadata"]["uid"])
    replicasets, pods = _pods_of(platform, ns, deployment)
    assert len(replicasets) == 1 and len(pods) == desired
    assert all(_pod_ready(p) for p in pods)
    nodes = {p["spec"]["nodeName"] for p in pods}
    if spec.get("device", "cuda") == "cuda":
        assert nodes <= GPU_NODES  # the GPU request + toleration land them on the tainted GPU nodes
        for pod in pods:
            limits = pod["spec"]["containers"][0]["resources"]["limits"]
            assert limits["nvidia.com/gpu"] == str(spec["resources"].get("gpus", 1))
    else:
        assert nodes == {"kwok-cpu-0"}

    status = cr["status"]
    assert status["observedGeneration"] == cr["metadata"]["generation"]
    assert status["replicas"] == desired and status["readyReplicas"] == desired
    assert status["endpoint"].startswith(f"http://{name}.{ns}.svc")
    engine = (spec.get("autoscaling") or {}).get("engine") if (spec.get("autoscaling") or {}).get("enabled") else None
    assert len(owned_by(platform, ns, "scaledobjects.keda.sh", cr["metadata"]["uid"])) == (engine == "keda")
    assert len(owned_by(platform, ns, "horizontalpodautoscalers", cr["metadata"]["uid"])) == (engine == "hpa")


def _demo(kube: Kube, namespace: str, name: str = "asr-demo", **spec: Any) -> dict[str, Any]:
    obj = example_in(kube, namespace, "demo-cpu")
    obj["metadata"]["name"] = name
    obj["spec"] = {**obj["spec"], **spec}
    return obj


def test_edited_and_deleted_children_are_restored(platform: Kube, ns: str, start_operator: StartOperator) -> None:
    start_operator()
    platform.apply(_demo(platform, ns))
    cr = wait_ready(platform, ns, "asr-demo")
    uid = cr["metadata"]["uid"]
    (service,) = owned_by(platform, ns, "service", uid)
    (deployment,) = owned_by(platform, ns, "deployment", uid)
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]

    platform.kubectl("delete", "service", service["metadata"]["name"], "-n", ns)
    wait_for(
        "the Service recreated",
        lambda: [
            s for s in owned_by(platform, ns, "service", uid) if s["metadata"]["uid"] != service["metadata"]["uid"]
        ],
    )
    patch = [{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "example.invalid/evil:1"}]
    platform.kubectl("patch", "deployment", deployment["metadata"]["name"], "-n", ns, "--type=json",
                     "-p", json.dumps(patch))  # fmt: skip

    def image_restored() -> bool:
        live = platform.get("deployment", deployment["metadata"]["name"], ns) or {}
        return bool(live.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [{}])[0].get("image")
                    == image)  # fmt: skip

    wait_for("the Deployment's image restored", image_restored)


def test_deleting_the_cr_garbage_collects_every_child(platform: Kube, ns: str, start_operator: StartOperator) -> None:
    start_operator()
    platform.apply(_demo(platform, ns))
    uid = wait_ready(platform, ns, "asr-demo")["metadata"]["uid"]
    (deployment,) = owned_by(platform, ns, "deployment", uid)
    assert owned_by(platform, ns, "service", uid) and owned_by(platform, ns, "configmap", uid)

    platform.kubectl("delete", "asrdeployment", "asr-demo", "-n", ns, "--timeout=60s")

    def all_gone() -> bool:
        left = [
            k for k in ("deployment", "service", "configmap", "poddisruptionbudget") if owned_by(platform, ns, k, uid)
        ]
        replicasets, pods = _pods_of(platform, ns, deployment)
        return not left and not replicasets and not pods

    wait_for("the garbage collector to remove every child", all_gone)


def _autoscalers(kube: Kube, namespace: str, uid: str) -> tuple[int, int]:
    return (
        len(owned_by(kube, namespace, "scaledobjects.keda.sh", uid)),
        len(owned_by(kube, namespace, "horizontalpodautoscalers", uid)),
    )


def test_autoscaling_engine_switches_leave_exactly_one_autoscaler(
    platform: Kube, ns: str, start_operator: StartOperator
) -> None:
    start_operator()
    keda = {"enabled": True, "engine": "keda", "minReplicas": 1, "maxReplicas": 3,
            "prometheus": {"serverAddress": "http://prometheus.monitoring.svc:9090"}}  # fmt: skip
    platform.apply(_demo(platform, ns, autoscaling=keda))
    uid = wait_ready(platform, ns, "asr-demo")["metadata"]["uid"]
    assert _autoscalers(platform, ns, uid) == (1, 0)
    for autoscaling, expected in (
        ({"engine": "hpa"}, (0, 1)),
        ({"enabled": False}, (0, 0)),
        ({"enabled": True, "engine": "keda"}, (1, 0)),
        ({"engine": "hpa"}, (0, 1)),
    ):
        patch = json.dumps({"spec": {"autoscaling": autoscaling}})
        platform.kubectl("patch", "asrd", "asr-demo", "-n", ns, "--type=merge", "-p", patch)
        wait_ready(platform, ns, "asr-demo")
        wait_for(f"autoscalers (ScaledObject, HPA) == {expected} after {autoscaling}",
                 lambda e=expected: _autoscalers(platform, ns, uid) == e)  # fmt: skip


def test_scale_to_zero_writes_an_http_scaled_object_the_add_on_crd_keeps_whole(
    platform: Kube, ns: str, start_operator: StartOperator
) -> None:
    """minReplicas 0: the HTTPScaledObject, as KEDA HTTP add-on v0.12.0's CRD stores it (a field it does not know
    would be pruned silently), and the ScaledObject's push trigger naming it; minReplicas 1 removes it again."""
    from asr_operator.autoscaling import build_http_scaled_object
    from asr_operator.builders import ASR
    from asr_operator.spec import parse_spec

    start_operator()
    keda = {"enabled": True, "engine": "keda", "minReplicas": 0, "maxReplicas": 2,
            "prometheus": {"serverAddress": "http://prometheus.monitoring.svc:9090"}}  # fmt: skip
    obj = _demo(platform, ns, autoscaling=keda)
    platform.apply(obj)
    uid = wait_ready(platform, ns, "asr-demo")["metadata"]["uid"]
    (stored,) = wait_for("the HTTPScaledObject", lambda: owned_by(platform, ns, "httpscaledobjects.http.keda.sh", uid))
    sent = build_http_scaled_object(ASR("asr-demo", ns, parse_spec(obj["spec"])))
    assert stored["spec"] == sent["spec"]
    assert stored["metadata"]["annotations"]["httpscaledobject.keda.sh/skip-scaledobject-creation"] == "true"
    (so,) = owned_by(platform, ns, "scaledobjects.keda.sh", uid)
    assert so["spec"]["minReplicaCount"] == 0
    assert so["spec"]["triggers"][1]["metadata"]["httpScaledObject"] == "asr-demo"

    platform.kubectl("patch", "asrd", "asr-demo", "-n", ns, "--type=merge",
                     "-p", json.dumps({"spec": {"autoscaling": {"minReplicas": 1}}}))  # fmt: skip
    wait_for("the HTTPScaledObject removed at minReplicas 1",
             lambda: not owned_by(platform, ns, "httpscaledobjects.http.keda.sh", uid))  # fmt: skip
    (so,) = owned_by(platform, ns, "scaledobjects.keda.sh", uid)
    assert [t["type"] for t in so["spec"]["triggers"]] == ["prometheus"]


def _one_set_of_children(kube: Kube, namespace: str, name: str) -> None:
    uid = _uid(kube, namespace, name)
    for kind in ("deployment", "service", "configmap"):
        assert len(owned_by(kube, namespace, kind, uid)) == 1, kind
    (deployment,) = owned_by(kube, namespace, "deployment", uid)
    replicasets, pods = _pods_of(kube, namespace, deployment)
    assert len(replicasets) == 1 and len(pods) == _desired_replicas(kube.get("asrd", name, namespace)["spec"])  # type: ignore[index]


def _refused_service_creates(kube: Kube, namespace: str, since: float) -> list[dict[str, Any]]:
    """Audit events: the operator's Service creates in `namespace` that admission (the quota) refused."""
    return [
        ev
        for ev in kube.audit_events(since)
        if ev["verb"] == "create"
        and ev["requestURI"].startswith(f"/api/v1/namespaces/{namespace}/services")
        and ev["user"]["username"].startswith("system:serviceaccount:")
        and ev.get("responseStatus", {}).get("code") == 403
    ]


def test_operator_killed_mid_reconcile_resumes_to_one_set_of_children(
    platform: Kube, ns: str, start_operator: StartOperator
) -> None:
    """The kill lands mid-reconcile for certain: a ResourceQuota of zero Services holds the operator between its
    Deployment (created) and its Service + status (refused by admission, retried later). Killed there, quota
    lifted, a new operator must finish the job with one set of children and a Ready status."""
    since = time.time() - 1
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-services", "namespace": ns},
             "spec": {"hard": {"services": "0"}}}  # fmt: skip
    platform.apply(quota)
    # admission enforces a quota once the quota controller has written its status
    wait_for("the quota's status", lambda: ((platform.get("resourcequota", "no-services", ns) or {}).get("status")
                                            or {}).get("hard"))  # fmt: skip
    first = start_operator()
    platform.apply(_demo(platform, ns))
    uid = _uid(platform, ns, "asr-demo")
    wait_for("the Service create refused by the quota", lambda: _refused_service_creates(platform, ns, since))
    first.stop(signal.SIGKILL)

    # the state the kill left: the ConfigMap and Deployment, no Service, no Ready status
    assert len(owned_by(platform, ns, "configmap", uid)) == 1
    assert len(owned_by(platform, ns, "deployment", uid)) == 1
    assert owned_by(platform, ns, "service", uid) == []
    assert ready_status(platform, ns, "asr-demo") is None
    platform.kubectl("delete", "resourcequota", "no-services", "-n", ns)
    start_operator()
    wait_ready(platform, ns, "asr-demo")
    _one_set_of_children(platform, ns, "asr-demo")


PEERING = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "asr-test-peering"}}


def test_two_peered_operator_replicas_make_one_set_of_children(
    platform: Kube, ns: str, start_operator: StartOperator
) -> None:
    platform.apply(PEERING)
    start_operator(peering_name="asr-test-peering")
    start_operator(peering_name="asr-test-peering")
    names = [f"asr-{i}" for i in range(3)]
    for name in names:
        platform.apply(_demo(platform, ns, name=name))
    for name in names:
        wait_ready(platform, ns, name)
        _one_set_of_children(platform, ns, name)
    peering = platform.get("clusterkopfpeering", "asr-test-peering")
    assert peering is not None and len(peering.get("status") or {}) == 2  # both replicas are alive peers


def test_rollout_completes_when_every_gpu_is_taken(platform: Kube, ns: str, start_operator: StartOperator) -> None:
    """4 replicas of 1 GPU fill both GPU nodes (2 GPUs each); a batching change must still roll out."""
    start_operator()
    obj = example_in(platform, ns, "sensevoice-gpu-keda")
    obj["spec"] = {**copy.deepcopy(obj["spec"]), "replicas": 4, "autoscaling": {"enabled": False}}
    name = obj["metadata"]["name"]
    platform.apply(obj)
    wait_ready(platform, ns, name)
    patch = json.dumps({"spec": {"batching": {"maxBatchSize": 16}}})
    platform.kubectl("patch", "asrd", name, "-n", ns, "--type=merge", "-p", patch)

    def rolled_out() -> bool:
        cr = ready_status(platform, ns, name)
        if not cr:
            return False
        (deployment,) = owned_by(platform, ns, "deployment", cr["metadata"]["uid"])
        st = deployment.get("status") or {}
        return bool(
            st.get("observedGeneration") == deployment["metadata"]["generation"]
            and st.get("updatedReplicas") == st.get("readyReplicas") == st.get("replicas") == 4
        )

    wait_for("the rollout to complete on a full GPU pool", rolled_out, timeout_s=60)


OPERATOR_USER = "system:serviceaccount:asr-system:asr-platform"  # the chart's ServiceAccount (as in conftest)
QUIET_S = 60


def test_after_ready_the_operator_writes_nothing(platform: Kube, ns: str, start_operator: StartOperator) -> None:
    """Convergence: once every CR is Ready and its pods settled, a minute of resync passes (every 5 s), child
    events and status refreshes must not write anything — a write here is a patch loop (drift seen where there is
    none) or a status that never settles."""
    start_operator(resync_s=5)
    names = []
    for example in EXAMPLES:
        obj = example_in(platform, ns, example)
        platform.apply(obj)
        names.append(obj["metadata"]["name"])
    for name in names:
        cr = wait_ready(platform, ns, name)
        (deployment,) = owned_by(platform, ns, "deployment", cr["metadata"]["uid"])
        desired = _desired_replicas(cr["spec"])
        wait_for(f"{name}'s pods Ready", lambda d=deployment, n=desired: _settled(platform, ns, d, n))
        # the status refresh that the last pod's Ready event triggers comes before the window opens
        wait_for(
            f"{name}'s status to count its Ready pods", lambda n=name, r=desired: _status_counts(platform, ns, n, r)
        )
        auto = cr["spec"].get("autoscaling") or {}
        if auto.get("enabled") and auto.get("engine") == "hpa":
            # the HPA controller's first evaluation (every 15 s) changes MetricsAvailable: a real change, before
            # the window (KEDA does not run here: its ScaledObject's condition stays Unknown)
            wait_for(f"{name}'s MetricsAvailable from the HPA", lambda n=name: _metrics_evaluated(platform, ns, n))
    since = time.time()
    time.sleep(QUIET_S)  # the window itself: what is measured is what happens in it
    writes = operator_writes(platform, OPERATOR_USER, {ns}, since)
    assert writes == [], f"{len(writes)} writes after convergence:\n" + "\n".join(writes[:20])


def _settled(kube: Kube, namespace: str, deployment: dict[str, Any], desired: int) -> bool:
    replicasets, pods = _pods_of(kube, namespace, deployment)
    return len(replicasets) == 1 and len(pods) == desired and all(_pod_ready(p) for p in pods)


def _status_counts(kube: Kube, namespace: str, name: str, ready: int) -> bool:
    cr = ready_status(kube, namespace, name)
    return bool(cr) and cr["status"].get("readyReplicas") == ready  # type: ignore[index]


def _metrics_evaluated(kube: Kube, namespace: str, name: str) -> bool:
    cr = kube.get("asrdeployment", name, namespace) or {}
    conditions = {c["type"]: c for c in (cr.get("status") or {}).get("conditions") or []}
    return conditions.get("MetricsAvailable", {}).get("status") in ("True", "False")


def _ready_condition(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    cr = kube.get("asrdeployment", name, namespace) or {}
    conditions = {c["type"]: c for c in (cr.get("status") or {}).get("conditions") or []}
    return conditions.get("Ready")


@pytest.mark.parametrize(
    ("failure", "reason", "degraded"),
    [
        ("unschedulable", "Unschedulable", "False"),  # the real scheduler: no node has the resource
        ("ImagePullBackOff", "ImagePullBackOff", "True"),  # kwok's pod-fail stage writes the kubelet's status
        ("CrashLoopBackOff", "CrashLoopBackOff", "True"),
        ("OOMKilled", "OOMKilled", "True"),
    ],
)
def test_status_says_why_no_pod_is_ready(
    platform: Kube, ns: str, start_operator: StartOperator, failure: str, reason: str, degraded: str
) -> None:
    start_operator()
    if failure == "unschedulable":
        obj = _demo(platform, ns, pod={"nodeSelector": {"example.com/no-such-node": "true"}})
    else:
        obj = _demo(platform, ns, pod={"annotations": {"kwok.asr-platform.io/fail": failure}})
    platform.apply(obj)

    cond = wait_for(
        f"the Ready condition's reason {reason}",
        lambda: (c := _ready_condition(platform, ns, "asr-demo")) and c["reason"] == reason and c,
    )
    assert cond["status"] == "False" and "pod asr-demo-" in cond["message"]
    if failure == "unschedulable":
        assert "nodes are available" in cond["message"]  # the scheduler's own words
    cr = platform.get("asrdeployment", "asr-demo", ns)
    assert cr is not None
    degraded_c = next(c for c in cr["status"]["conditions"] if c["type"] == "Degraded")
    assert degraded_c["status"] == degraded
    # The printer column shows the reason.
    table = platform.kubectl("get", "asrdeployment", "asr-demo", "-n", ns, "--no-headers").stdout
    assert reason in table.split(), table


def test_autoscaling_scrapes_the_pods_and_says_when_the_metric_is_missing(
    platform: Kube, ns: str, start_operator: StartOperator
) -> None:
    """The real HPA controller, with no custom-metrics API registered (no prometheus-adapter here): it cannot
    read asr_load, and the ASRDeployment says so instead of looking healthy while never scaling."""
    start_operator()
    hpa = {"enabled": True, "engine": "hpa", "minReplicas": 1, "maxReplicas": 3}
    platform.apply(_demo(platform, ns, autoscaling=hpa))
    uid = wait_ready(platform, ns, "asr-demo")["metadata"]["uid"]
    # scraping follows autoscaling: a ServiceMonitor (admitted by prometheus-operator's real CRD) keeps the pod
    # labels the queries match on
    (monitor,) = owned_by(platform, ns, "servicemonitors.monitoring.coreos.com", uid)
    assert "app.kubernetes.io/instance" in monitor["spec"]["podTargetLabels"]

    def metrics_condition() -> dict[str, Any] | None:
        cr = platform.get("asrdeployment", "asr-demo", ns) or {}
        found = {c["type"]: c for c in (cr.get("status") or {}).get("conditions") or []}
        cond = found.get("MetricsAvailable")
        return cond if cond and cond["status"] == "False" else None

    cond = wait_for("MetricsAvailable=False from the HPA controller", metrics_condition, timeout_s=120)
    assert cond["reason"] == "NoMetricData"
    assert "HorizontalPodAutoscaler" in cond["message"] and "asr_load" in cond["message"], cond


def test_status_says_why_a_scheduled_pod_never_starts(platform: Kube, ns: str, start_operator: StartOperator) -> None:
    """A pod stuck ContainerCreating (kwok's pod-fail stage) with the kubelet's FailedMount warning: kwok does not
    mount volumes, so the test posts the event a kubelet posts when a hostPath directory is missing. The resync
    (every 5 s here) finds it once the pod has been creating for STUCK_AFTER_S."""
    start_operator(resync_s=5)
    platform.apply(_demo(platform, ns, pod={"annotations": {"kwok.asr-platform.io/fail": "ContainerCreating"}}))
    pod = wait_for("the pod stuck ContainerCreating", lambda: next(iter(platform.list("pods", ns)), None))
    message = 'MountVolume.SetUp failed for volume "model-cache" : hostPath type check failed: /srv/asr is not a dir'
    platform.apply({
        "apiVersion": "v1", "kind": "Event", "type": "Warning", "reason": "FailedMount", "message": message,
        "metadata": {"name": f"{pod['metadata']['name']}.failedmount", "namespace": ns},
        "involvedObject": {"kind": "Pod", "name": pod["metadata"]["name"], "namespace": ns,
                           "uid": pod["metadata"]["uid"], "apiVersion": "v1"},
        "source": {"component": "kubelet", "host": pod["spec"].get("nodeName", "")},
        "firstTimestamp": pod["metadata"]["creationTimestamp"], "lastTimestamp": pod["metadata"]["creationTimestamp"],
        "count": 1,
    })  # fmt: skip
    cond = wait_for(
        "the Ready condition's reason FailedMount",
        lambda: (c := _ready_condition(platform, ns, "asr-demo")) and c["reason"] == "FailedMount" and c,
        timeout_s=120,
    )
    assert "hostPath type check failed" in cond["message"] and pod["metadata"]["name"] in cond["message"]
