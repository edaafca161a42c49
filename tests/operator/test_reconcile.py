"""`reconcile` against an in-memory API (FakeKube): drift detection as a real API server answers, and the order
of writes."""

from __future__ import annotations

from typing import Any

from asr_operator.kube import Kind
from asr_operator.reconcile import reconcile, repair_child
from fakekube import FakeKube
from kubernetes.client.exceptions import ApiException

NS = "speech"
GPU_SPEC: dict[str, Any] = {
    "model": {"source": "iic/SenseVoiceSmall"},
    "device": "cuda",
    "resources": {"requests": {"cpu": "0.5", "memory": "1024Mi"}, "limits": {"memory": "8Gi"}, "shmSize": "1024Mi"},
    "autoscaling": {"enabled": True, "engine": "hpa", "targetQueueDepth": 1000},
}


def asr_body(spec: dict[str, Any], name: str = "gpu") -> dict[str, Any]:
    return {
        "apiVersion": "asr-platform.io/v1alpha1",
        "kind": "ASRDeployment",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "generation": 1},
        "spec": spec,
    }


def test_canonicalised_quantities_are_not_drift() -> None:
    """The server returns 1 → "1", "0.5" → "500m", "1024Mi" → "1Gi", 1000 → "1k": a second reconcile and a
    child watch event then find nothing to patch (no repair counted)."""
    kube = FakeKube()
    body = asr_body(GPU_SPEC)
    reconcile(kube, body, "img:1")
    created = kube.writes()
    assert ("create", "Deployment", "gpu") in created and ("create", "HorizontalPodAutoscaler", "gpu") in created
    kube.calls.clear()
    reconcile(kube, body, "img:1")
    assert kube.writes() == []
    kube.objects["ASRDeployment", NS, "gpu"] = body
    for kind in ("Deployment", "HorizontalPodAutoscaler"):
        live = kube.objects[kind, NS, "gpu"]
        result = repair_child(kube, live, False, "img:1")
        assert result is not None and result[1] == "unchanged", kind
    assert kube.writes() == []


def test_builders_write_the_canonical_form() -> None:
    kube = FakeKube(canonicalise=False)
    reconcile(kube, asr_body(GPU_SPEC), "img:1")
    pod = kube.objects["Deployment", NS, "gpu"]["spec"]["template"]["spec"]
    resources = pod["containers"][0]["resources"]
    assert resources["requests"] == {"cpu": "500m", "memory": "1Gi"}
    assert resources["limits"]["nvidia.com/gpu"] == "1"
    assert {v["name"]: v["emptyDir"]["sizeLimit"] for v in pod["volumes"] if "emptyDir" in v}["dshm"] == "1Gi"
    hpa = kube.objects["HorizontalPodAutoscaler", NS, "gpu"]
    assert hpa["spec"]["metrics"][0]["pods"]["target"]["averageValue"] == "1k"


class KedaWebhookKube(FakeKube):
    """KEDA's admission webhook: a ScaledObject for a Deployment another HPA already targets is refused (403)."""

    def create(self, kind: Kind, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        target = body.get("spec", {}).get("scaleTargetRef", {}).get("name")
        if kind.kind == "ScaledObject" and ("HorizontalPodAutoscaler", namespace, target) in self.objects:
            self.calls.append(("refused", kind.kind, body["metadata"]["name"]))
            raise ApiException(status=403, reason="admission webhook vscaledobject.kb.io denied the request")
        return super().create(kind, namespace, body)


def test_switching_hpa_to_keda_deletes_the_hpa_before_creating_the_scaledobject() -> None:
    kube = KedaWebhookKube()
    hpa = {"enabled": True, "engine": "hpa"}
    keda = {"enabled": True, "engine": "keda", "prometheus": {"serverAddress": "http://prom:9090"}}
    spec = {"model": {"source": "builtin:demo"}, "device": "cpu", "autoscaling": hpa}
    reconcile(kube, asr_body(spec), "img:1")
    assert ("HorizontalPodAutoscaler", NS, "gpu") in kube.objects
    kube.calls.clear()
    reconcile(kube, asr_body({**spec, "autoscaling": keda}), "img:1")
    writes = kube.writes()
    assert ("HorizontalPodAutoscaler", NS, "gpu") not in kube.objects
    assert ("ScaledObject", NS, "gpu") in kube.objects
    assert writes.index(("delete", "HorizontalPodAutoscaler", "gpu")) < writes.index(("create", "ScaledObject", "gpu"))


def test_resync_stops_once_its_cr_is_gone_or_replaced() -> None:
    """Without a finalizer kopf does not stop the resync daemon of a deleted CR: it must stop itself."""
    from types import SimpleNamespace

    from asr_operator.handlers import resync_once
    from asr_operator.settings import OperatorSettings

    kube = FakeKube()
    memo: Any = SimpleNamespace(kube=kube)
    body = asr_body({"model": {"source": "builtin:demo"}, "device": "cpu"}, name="demo")
    kube.objects["ASRDeployment", NS, "demo"] = body
    assert resync_once(memo, OperatorSettings(), NS, "demo", "uid-demo") is True
    assert ("Deployment", NS, "demo") in kube.objects  # it reconciled
    assert resync_once(memo, OperatorSettings(), NS, "demo", "uid-of-an-older-demo") is False
    del kube.objects["ASRDeployment", NS, "demo"]
    assert resync_once(memo, OperatorSettings(), NS, "demo", "uid-demo") is False


def test_a_new_owner_creates_its_children_without_looking_first() -> None:
    """A just-created ASRDeployment owns nothing: one POST per child, no lookups, no deletes of unwanted kinds
    (they could not be its own) — the API calls a burst of new CRs costs, halved."""
    kube = FakeKube()
    reconcile(kube, asr_body(GPU_SPEC), "img:1", new=True)
    assert all(verb == "create" for verb, _, _ in kube.calls), kube.calls
    assert {kind for _, kind, _ in kube.calls} == {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget",
                                                  "HorizontalPodAutoscaler", "ServiceMonitor"}  # fmt: skip
    # The same with the children already there (a create event seen twice): 409, then lookup and patch as usual.
    kube.calls.clear()
    reconcile(kube, asr_body(GPU_SPEC), "img:1", new=True)
    assert kube.writes() == [c for c in kube.calls if c[0] == "create"]  # nothing patched: no drift


def test_pod_events_refresh_the_status_only_when_a_pod_problem_can_change_it() -> None:
    from asr_operator.reconcile import pod_event_changes_status

    kube = FakeKube()
    cr = asr_body(GPU_SPEC)
    cr["status"] = {"conditions": [{"type": "Ready", "status": "True", "reason": "MinimumReplicasReady"}]}
    kube.objects["ASRDeployment", NS, "gpu"] = cr
    healthy = {"metadata": {"name": "gpu-1"}, "status": {"containerStatuses": [{"state": {"running": {}}}]}}
    crashing = {"metadata": {"name": "gpu-2"}, "status": {"containerStatuses": [
        {"state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}}  # fmt: skip
    assert not pod_event_changes_status(kube, NS, "gpu", healthy)  # nothing the Deployment's events miss
    assert pod_event_changes_status(kube, NS, "gpu", crashing)
    cr["status"]["conditions"][0].update(status="False", reason="CrashLoopBackOff")
    assert pod_event_changes_status(kube, NS, "gpu", healthy)  # the problem may have cleared: recompute


def test_status_only_events_of_a_checked_child_skip_the_drift_check() -> None:
    """A Deployment checked at generation N: its next events at N (status updates) neither look up the owner nor
    diff the spec; a spec edit (generation N+1) is checked again and repaired."""
    import logging

    from asr_operator.reconcile import handle_child_event

    kube = FakeKube()
    body = asr_body({"model": {"source": "builtin:demo"}, "device": "cpu"}, name="demo")
    kube.objects["ASRDeployment", NS, "demo"] = body
    reconcile(kube, body, "img:1")
    live = kube.objects["Deployment", NS, "demo"]
    live["metadata"].update(uid="dep-uid", generation=3)
    log = logging.getLogger("test")
    handle_child_event(kube, live, False, "img:1", log)  # first sight: checked against the owner
    assert ("get", "ASRDeployment", "demo") in kube.calls
    kube.calls.clear()
    status_update = {**live, "status": {"replicas": 1, "readyReplicas": 1}}
    handle_child_event(kube, status_update, False, "img:1", log)
    assert ("patch", "Deployment", "demo") not in kube.calls and ("get", "Deployment", "demo") not in kube.calls
    # the status write read the CR only (the event's Deployment is used as is)
    assert [c for c in kube.calls if c[0] == "get"] == [("get", "ASRDeployment", "demo")]
    kube.calls.clear()
    edited = {**live, "metadata": {**live["metadata"], "generation": 4}}
    edited["spec"] = {**live["spec"], "template": {**live["spec"]["template"], "spec": {"containers": []}}}
    handle_child_event(kube, edited, False, "img:1", log)
    assert ("patch", "Deployment", "demo") in kube.calls  # a spec edit is repaired


def test_rollout_complete_only_when_every_count_matches() -> None:
    from asr_operator.reconcile import rollout_complete

    def dep(desired: int, **status: int) -> dict[str, Any]:
        return {
            "metadata": {"generation": 2},
            "spec": {"replicas": desired},
            "status": {"observedGeneration": 2, **status},
        }

    full = {"replicas": 2, "readyReplicas": 2, "updatedReplicas": 2, "availableReplicas": 2}
    assert rollout_complete(dep(2, **full))
    assert not rollout_complete(dep(2, **{**full, "replicas": 3}))  # a surplus pod (rollout): may be failing
    assert not rollout_complete(dep(2, **{**full, "readyReplicas": 1}))
    assert not rollout_complete({**dep(2, **full), "metadata": {"generation": 3}})  # not observed yet
    assert not rollout_complete(dep(0))
