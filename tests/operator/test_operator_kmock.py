"""The real operator (kopf, KopfRunner thread) against kmock, an in-memory Kubernetes API.

kmock has no server-side apply, PUT or garbage collection: the operator uses create + merge patch, and garbage
collection is checked through ownerReferences. Waits are bounded polls; nothing asserts on timing.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import kmock as kmock_lib
from harness import ASRD, NS, Cluster, asr_body, run_operator, wait_for
from prometheus_client import REGISTRY

DEP = "apps/v1/deployments"
CM = "v1/configmaps"
SVC = "v1/services"
PDB = "policy/v1/poddisruptionbudgets"
SO = "keda.sh/v1alpha1/scaledobjects"
HPA = "autoscaling/v2/horizontalpodautoscalers"
SM = "monitoring.coreos.com/v1/servicemonitors"

DEMO = {"model": {"source": "builtin:demo"}, "device": "cpu", "replicas": 2}
KEDA = {"enabled": True, "engine": "keda", "minReplicas": 2, "maxReplicas": 5,
        "prometheus": {"serverAddress": "http://prom:9090"}}  # fmt: skip


def _container(dep: dict[str, Any]) -> dict[str, Any]:
    return dict(dep["spec"]["template"]["spec"]["containers"][0])


def _owned_by(obj: dict[str, Any], name: str) -> bool:
    refs = obj["metadata"].get("ownerReferences") or []
    return any(
        r["kind"] == "ASRDeployment" and r["name"] == name and r["uid"] == f"uid-{name}" and r.get("controller")
        for r in refs
    )


def _status(cluster: Cluster, name: str) -> dict[str, Any]:
    return dict((cluster.get(ASRD, name) or {}).get("status") or {})


def _condition(cluster: Cluster, name: str, type_: str) -> dict[str, Any]:
    return next((c for c in _status(cluster, name).get("conditions", []) if c["type"] == type_), {})


def _reconciles(result: str) -> float:
    return REGISTRY.get_sample_value("asr_operator_reconcile_total", {"result": result}) or 0.0


async def test_create_makes_owned_children_and_status(cluster: Cluster) -> None:
    successes = _reconciles("success")
    async with run_operator(cluster):
        await cluster.create(ASRD, asr_body("demo", DEMO))
        for resource, name in [(CM, "demo-config"), (DEP, "demo"), (SVC, "demo"), (PDB, "demo")]:
            obj = await wait_for(lambda r=resource, n=name: cluster.get(r, n), what=f"{resource} {name}")
            assert _owned_by(obj, "demo"), obj["metadata"]
            assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "asr-operator"
        assert cluster.get(SO, "demo") is None and cluster.get(HPA, "demo") is None and cluster.get(SM, "demo") is None
        dep = cluster.must(DEP, "demo")
        assert dep["spec"]["replicas"] == 2
        assert _container(dep)["envFrom"] == [{"configMapRef": {"name": "demo-config"}}]
        assert "ASR_MODEL" not in cluster.must(CM, "demo-config")["data"]

        status = await wait_for(
            lambda: _status(cluster, "demo").get("observedGeneration") == 1 and _status(cluster, "demo"),
            what="status of generation 1",
        )
        assert status["endpoint"] == "http://demo.asr.svc:8000"
        assert status["selector"] == "app.kubernetes.io/instance=demo,app.kubernetes.io/name=asr-inference"
        assert status["observedGeneration"] == 1
        assert {c["type"] for c in status["conditions"]} == {"Ready", "Progressing", "Degraded"}
        assert _condition(cluster, "demo", "Ready")["status"] == "False"  # no pods in kmock yet
        assert _condition(cluster, "demo", "Degraded")["status"] == "False"

        # The Deployment controller reports ready pods → the owner's status follows.
        dep_status = {"replicas": 2, "readyReplicas": 2, "updatedReplicas": 2, "availableReplicas": 2}
        await cluster.patch(DEP, "demo", {"status": dep_status}, sub="status")
        await wait_for(lambda: _status(cluster, "demo").get("phase") == "Ready", what="phase Ready")
        status = _status(cluster, "demo")
        assert status["replicas"] == 2 and status["readyReplicas"] == 2
        assert _condition(cluster, "demo", "Ready")["status"] == "True"
        assert _condition(cluster, "demo", "Progressing")["status"] == "False"
    assert _reconciles("success") > successes


async def test_update_patches_children_in_place(cluster: Cluster) -> None:
    async with run_operator(cluster):
        await cluster.create(ASRD, asr_body("demo", DEMO))
        dep = await wait_for(lambda: cluster.get(DEP, "demo"), what="deployment")
        checksum = dep["spec"]["template"]["metadata"]["annotations"]["asr-platform.io/config-checksum"]
        await wait_for(lambda: cluster.get(PDB, "demo"), what="pdb")

        spec = copy.deepcopy(DEMO)
        spec.update(replicas=1, batching={"maxBatchSize": 4}, pod={"nodeSelector": {"pool": "cpu"}})
        await cluster.patch(ASRD, "demo", {"metadata": {"generation": 2}, "spec": spec})

        cm = await wait_for(
            lambda: (c := cluster.get(CM, "demo-config")) and c["data"]["ASR_MAX_BATCH_SIZE"] == "4" and c,
            what="patched configmap",
        )
        dep = await wait_for(
            lambda: (d := cluster.get(DEP, "demo")) and d["spec"]["replicas"] == 1 and d, what="patched deployment"
        )
        assert dep["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "cpu"}
        new_checksum = dep["spec"]["template"]["metadata"]["annotations"]["asr-platform.io/config-checksum"]
        assert new_checksum != checksum  # the config change rolls the pods
        assert _owned_by(cm, "demo") and _owned_by(dep, "demo")
        await wait_for(lambda: cluster.get(PDB, "demo") is None, what="PDB removed at one replica")
        await wait_for(lambda: _status(cluster, "demo").get("observedGeneration") == 2, what="observedGeneration 2")

        # A map key the spec no longer has is removed from the child (three-way merge patch).
        await cluster.patch(ASRD, "demo", {"metadata": {"generation": 3}, "spec": {"pod": {"nodeSelector": None}}})
        await wait_for(
            lambda: "nodeSelector" not in cluster.must(DEP, "demo")["spec"]["template"]["spec"],
            what="nodeSelector removed",
        )


async def test_deleted_and_edited_children_are_restored(cluster: Cluster) -> None:
    async with run_operator(cluster):
        await cluster.create(ASRD, asr_body("demo", DEMO))
        await wait_for(lambda: cluster.get(SVC, "demo") and cluster.get(DEP, "demo"), what="children")

        await cluster.delete(DEP, "demo")
        dep = await wait_for(lambda: cluster.get(DEP, "demo"), what="deployment recreated")
        assert _owned_by(dep, "demo")

        await cluster.delete(SVC, "demo")
        await wait_for(lambda: cluster.get(SVC, "demo"), what="service recreated")

        await cluster.patch(CM, "demo-config", {"data": {"ASR_MAX_BATCH_SIZE": "999"}})
        await wait_for(
            lambda: cluster.must(CM, "demo-config")["data"]["ASR_MAX_BATCH_SIZE"] == "16", what="config restored"
        )
        await cluster.patch(DEP, "demo", {"spec": {"replicas": 7}})
        await wait_for(lambda: cluster.must(DEP, "demo")["spec"]["replicas"] == 2, what="replicas restored")


async def test_timer_repairs_drift_without_child_events(cluster: Cluster) -> None:
    """The resync timer alone restores a child (here the child watch cannot see it: its label was removed)."""
    from asr_operator.settings import OperatorSettings

    async with run_operator(cluster, OperatorSettings(resync_interval_s=1.0)):
        await cluster.create(ASRD, asr_body("demo", DEMO))
        await wait_for(lambda: cluster.get(SVC, "demo"), what="service")
        await cluster.patch(SVC, "demo", {"metadata": {"labels": {"app.kubernetes.io/managed-by": None}}})
        await wait_for(
            lambda: (
                cluster.must(SVC, "demo")["metadata"]["labels"].get("app.kubernetes.io/managed-by") == "asr-operator"
            ),
            timeout=15,
            what="label restored by the timer",
        )


async def test_autoscaling_engine_switch_and_disable(cluster: Cluster) -> None:
    async with run_operator(cluster):
        spec = {**DEMO, "replicas": 1, "autoscaling": KEDA}
        await cluster.create(ASRD, asr_body("demo", spec))
        so = await wait_for(lambda: cluster.get(SO, "demo"), what="scaledobject")
        assert _owned_by(so, "demo") and cluster.get(HPA, "demo") is None
        dep = cluster.must(DEP, "demo")
        assert dep["spec"]["replicas"] == 2  # created at minReplicas
        await wait_for(lambda: cluster.get(PDB, "demo"), what="pdb with autoscaling")

        # The autoscaler owns replicas now: the operator must not reset them.
        await cluster.patch(DEP, "demo", {"spec": {"replicas": 4}})
        spec = {**spec, "autoscaling": {**KEDA, "engine": "hpa"}}
        await cluster.patch(ASRD, "demo", {"metadata": {"generation": 2}, "spec": spec})
        hpa = await wait_for(lambda: cluster.get(HPA, "demo"), what="hpa")
        assert _owned_by(hpa, "demo")
        await wait_for(lambda: cluster.get(SO, "demo") is None, what="scaledobject removed")
        assert cluster.must(DEP, "demo")["spec"]["replicas"] == 4

        spec = {**spec, "replicas": 3, "autoscaling": {"enabled": False}}
        await cluster.patch(ASRD, "demo", {"metadata": {"generation": 3}, "spec": spec})
        await wait_for(lambda: cluster.get(HPA, "demo") is None, what="hpa removed")
        await wait_for(lambda: cluster.must(DEP, "demo")["spec"]["replicas"] == 3, what="operator owns replicas")


async def test_invalid_spec_is_degraded_with_an_event(cluster: Cluster) -> None:
    invalid = _reconciles("invalid_spec")
    async with run_operator(cluster):
        bad = {**DEMO, "resources": {"requests": {"memory": "16Gi"}, "limits": {"memory": "4Gi"}}}
        await cluster.create(ASRD, asr_body("bad", bad))
        await wait_for(lambda: _status(cluster, "bad").get("phase") == "Failed", what="phase Failed")
        degraded = _condition(cluster, "bad", "Degraded")
        assert degraded["status"] == "True" and degraded["reason"] == "InvalidSpec"
        assert "requests.memory" in degraded["message"]
        assert cluster.get(DEP, "bad") is None
        assert _reconciles("invalid_spec") > invalid
        events = await wait_for(
            lambda: [
                e.raw
                for (res, _ns, _n), e in list(cluster.kmock.objects.items())
                if res.plural == "events" and not e.deleted and e.raw.get("reason") == "InvalidSpec"
            ],
            what="an InvalidSpec event",
        )
        assert events[0]["type"] == "Warning" and events[0]["involvedObject"]["name"] == "bad"

        # Fixing the spec recovers.
        fix = {"metadata": {"generation": 2}, "spec": {"resources": {"limits": {"memory": "32Gi"}}}}
        await cluster.patch(ASRD, "bad", fix)
        await wait_for(lambda: cluster.get(DEP, "bad"), what="deployment after the fix")
        await wait_for(lambda: _condition(cluster, "bad", "Degraded").get("status") == "False", what="not degraded")


async def test_missing_keda_api_is_degraded_and_retried(cluster: Cluster) -> None:
    """A cluster without KEDA answers 404 for ScaledObjects: the rest is created, the CR says what is missing,
    and the operator keeps retrying. (kmock still records the refused POST, so later attempts see a 409 there;
    hence the check over the status history.)"""
    del cluster.kmock.resources[SO]
    cluster.kmock[re.compile(r"/apis/keda\.sh/v1alpha1/namespaces/.*")] << 404

    def degraded_reasons() -> list[tuple[str, str]]:
        out = []
        for version in cluster.kmock.objects[ASRD, NS, "demo"].history:
            for c in ((version.raw if version is not None else {}).get("status") or {}).get("conditions", []):
                if c["type"] == "Degraded" and c["status"] == "True":
                    out.append((c["reason"], c["message"]))
        return out

    async with run_operator(cluster):
        await cluster.create(ASRD, asr_body("demo", {**DEMO, "autoscaling": KEDA}))
        reasons = await wait_for(
            lambda: [m for r, m in degraded_reasons() if r == "MissingAPI"], what="Degraded: MissingAPI"
        )
        assert "keda.sh/v1alpha1" in reasons[0]
        assert cluster.get(DEP, "demo") is not None  # everything before the autoscaler exists
        posts = lambda: [  # noqa: E731
            r for r in list(cluster.kmock) if r.method == "POST" and r.resource and r.resource.plural == "scaledobjects"
        ]
        await wait_for(lambda: len(posts()) >= 2, what="a retry")


async def test_cr_delete_leaves_nothing_behind(cluster: Cluster) -> None:
    """kmock has no garbage collector: every child must carry a controller ownerReference to the CR, and the
    CR itself must go away (the operator releases its finalizer)."""
    async with run_operator(cluster):
        spec = {**DEMO, "autoscaling": KEDA, "monitoring": {"serviceMonitor": {"enabled": True}}}
        await cluster.create(ASRD, asr_body("demo", spec))
        children = [(CM, "demo-config"), (DEP, "demo"), (SVC, "demo"), (PDB, "demo"), (SO, "demo"), (SM, "demo")]
        for resource, name in children:
            await wait_for(lambda r=resource, n=name: cluster.get(r, n), what=f"{resource}")
        owned = [(r, n) for r, n in children if _owned_by(cluster.must(r, n), "demo")]
        assert owned == children

        await cluster.delete(ASRD, "demo")
        await wait_for(lambda: cluster.get(ASRD, "demo") is None, what="the CR gone")
        # What a garbage collector would delete: everything owned by the CR's uid. Nothing else was created.
        leftovers = [
            (str(res), n)
            for (res, _ns, n), obj in list(cluster.kmock.objects.items())
            if not obj.deleted and res.plural not in ("events", "asrdeployments")
            and not _owned_by(obj.raw, "demo")
        ]  # fmt: skip
        assert leftovers == []


async def test_a_created_cr_gets_no_finalizer(cluster: Cluster) -> None:
    """Children go with the CR through ownerReferences: no finalizer, so a CR never stays Terminating while
    the operator is down (helm uninstall deletes custom resources after the operator)."""
    async with run_operator(cluster):
        await cluster.create(ASRD, asr_body("demo", DEMO))
        await wait_for(lambda: _status(cluster, "demo").get("observedGeneration") == 1, what="reconciled")
        await wait_for(lambda: cluster.get(PDB, "demo"), what="children")
        finalizer_writes = [
            v.raw["metadata"].get("finalizers")
            for v in cluster.kmock.objects[ASRD, NS, "demo"].history
            if v is not None and v.raw["metadata"].get("finalizers")
        ]
        assert finalizer_writes == []
    # With the operator stopped, a delete takes effect at once.
    await cluster.delete(ASRD, "demo")
    assert cluster.get(ASRD, "demo") is None


async def test_child_watches_select_owned_children_server_side(cluster: Cluster) -> None:
    async with run_operator(cluster):
        for plural in ("configmaps", "services", "deployments", "poddisruptionbudgets", "horizontalpodautoscalers"):
            await wait_for(lambda p=plural: cluster.watching(p), what=f"a watch of {plural}")
        watches = [
            r
            for r in list(cluster.kmock)
            if r.action == kmock_lib.action.WATCH and r.resource is not None and r.resource.plural != "asrdeployments"
        ]
        assert watches
        for request in watches:
            selector = request.params.get("labelSelector")
            assert selector == "app.kubernetes.io/managed-by=asr-operator", (request.resource.plural, selector)
        cr_watch = [r for r in list(cluster.kmock) if r.resource is not None and r.resource.plural == "asrdeployments"]
        assert all("labelSelector" not in r.params for r in cr_watch)
