"""End to end on a real cluster: chart → operator → ASRDeployment (CPU, demo model) → transcription → metrics →
batching change rolls out → scaled to two → delete cleans up (autoscaling: test_autoscaling.py). Tests run in file
order and share one ASRDeployment; each asserts one piece of the contract."""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml
from load_loop import LoadLoop  # tests/ is on pytest's pythonpath

from e2e.deployed import (
    CHECKSUM_ANNOTATION,
    EXAMPLE,
    SAMPLE_TXT,
    SAMPLE_WAV,
    Deployed,
    delete,
    deploy,
    is_ready,
    manifest,
    name_of,
    normalize,
    pod_url,
    ready_pods,
    service_target,
    service_url,
    transcribe,
)
from e2e.tools import CRD_NAME, ROOT, SYSTEM_NAMESPACE, Images, Kube, scaled, wait_for

NAME = "demo"


@pytest.fixture(scope="module")
def asr(
    platform: Kube, namespace: str, images: Images, node_selector: dict[str, str], local_cluster: Any
) -> Iterator[Deployed]:
    d = deploy(platform, manifest(NAME, namespace, images, node_selector), direct=local_cluster is not None)
    yield d
    delete(d)


# ----------------------------------------------------------------------------------------------------


def test_example_manifest_is_accepted_by_the_api_server(platform: Kube, namespace: str) -> None:
    """The README's sample (examples/demo-cpu.yaml) passes the real CRD schema and CEL rules (dry run)."""
    assert EXAMPLE.is_file(), f"{EXAMPLE.relative_to(ROOT)} is missing (the README deploys it)"
    for doc in yaml.safe_load_all(EXAMPLE.read_text()):
        if not doc:
            continue
        doc.setdefault("metadata", {})["namespace"] = namespace
        platform.apply(doc, dry_run="server")


def test_ready_with_status_and_children(asr: Deployed) -> None:
    cr = asr.cr()
    assert cr is not None
    status = cr["status"]
    assert status.get("phase") == "Ready", status
    assert status["readyReplicas"] >= 1, status
    deploy = asr.one_owned("deployments")
    svc = asr.one_owned("services")
    port = service_target(asr)[1]
    assert status.get("endpoint") == f"http://{name_of(svc)}.{asr.namespace}.svc:{port}", status
    assert (deploy.get("status") or {}).get("readyReplicas", 0) >= 1, deploy.get("status")
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].endswith(f"{cr['spec']['image']['repository']}:{cr['spec']['image']['tag']}")
    assert asr.owned("configmaps"), "no ConfigMap owned by the ASRDeployment"
    if asr.direct:  # the in-cluster operator's metrics endpoint answers on its pod
        (op,) = asr.kube.list("pods", SYSTEM_NAMESPACE, selector="app.kubernetes.io/component=operator")
        port = next(p["containerPort"] for p in op["spec"]["containers"][0]["ports"] if p["name"] == "http-metrics")
        metrics = httpx.get(f"http://{op['status']['podIP']}:{port}/metrics", timeout=10).text
        assert "asr_operator_" in metrics, metrics[:500]
    asr.kube.kubectl(
        "wait",
        "--for=condition=Available",
        f"deployment/{name_of(deploy)}",
        "-n",
        asr.namespace,
        f"--timeout={int(scaled(60))}s",
        timeout=scaled(90),
    )


def _seconds(timestamp: str) -> float:
    return datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def test_ready_only_after_the_model_is_loaded_and_warmed(asr: Deployed) -> None:
    """The pod turns Ready no sooner than the server's own start-up (load + warm-up) after its container started:
    the probes wait for /readyz, which answers 200 only once warm-up is done."""
    (pod,) = ready_pods(asr)
    started = pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
    ready_at = next(c["lastTransitionTime"] for c in pod["status"]["conditions"] if c["type"] == "Ready")
    with service_url(asr) as url:
        body = httpx.get(f"{url}/readyz", timeout=30).json()
    assert body["status"] == "ready" and body["startup_seconds"] > 0, body
    # timestamps are whole seconds: allow one of rounding
    assert _seconds(ready_at) - _seconds(started) >= body["startup_seconds"] - 1, (started, ready_at, body)


def test_transcribes_the_sample_through_the_service(asr: Deployed) -> None:
    assert SAMPLE_WAV.is_file() and SAMPLE_TXT.is_file(), "samples/demo.wav and samples/demo.txt are needed"
    with service_url(asr) as url:
        assert httpx.get(f"{url}/readyz", timeout=30).status_code == 200
        resp = transcribe(url, SAMPLE_WAV.read_bytes())
    assert resp.status_code == 200, resp.text
    got = resp.json()["text"]
    assert normalize(got) == normalize(SAMPLE_TXT.read_text()), f"transcript {got!r}"


def test_metrics_count_the_request(asr: Deployed) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    with service_url(asr) as url:
        assert transcribe(url, SAMPLE_WAV.read_bytes()).status_code == 200
        text = httpx.get(f"{url}/metrics", timeout=30).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }
    assert ("asr_queue_depth", ()) in samples and ("asr_load", ()) in samples, sorted({n for n, _ in samples})
    ok = samples.get(("asr_requests_total", (("code", "200"),)), 0)
    assert ok >= 1, {k: v for k, v in samples.items() if k[0] == "asr_requests_total"}


def test_batching_change_rolls_out(asr: Deployed) -> None:
    deploy = asr.one_owned("deployments")
    before_checksum = (deploy["spec"]["template"]["metadata"].get("annotations") or {}).get(CHECKSUM_ANNOTATION)
    assert before_checksum, f"pod template lacks the {CHECKSUM_ANNOTATION} annotation"
    deploy_uid = deploy["metadata"]["uid"]

    def replicasets() -> dict[str, dict[str, Any]]:
        return {
            rs["metadata"]["uid"]: rs
            for rs in asr.kube.list("replicasets", asr.namespace)
            if any(r.get("uid") == deploy_uid for r in rs["metadata"].get("ownerReferences") or [])
        }

    before = set(replicasets())
    # one client, request after request (each a fresh variant of the clip: no result-cache hits), during the rollout
    with service_url(asr) as url, LoadLoop(url, SAMPLE_WAV, concurrency=1, repeat_every=10**9) as trickle:
        asr.kube.patch_merge(CRD_NAME, NAME, asr.namespace, {"spec": {"batching": {"maxBatchSize": 4}}})
        _wait_rolled_out(asr, deploy, before_checksum, before, replicasets)
        time.sleep(2)  # a few requests on the new pod alone
    failed = {code: n for code, n in trickle.codes.items() if code != 200}  # 0: the connection failed
    assert trickle.codes and not failed, f"requests failed during the rollout: {failed} of {trickle.codes.total()}"


def _wait_rolled_out(
    asr: Deployed, deploy: dict[str, Any], before_checksum: str, before: set[str], replicasets: Any
) -> None:
    """A new ReplicaSet with the new config checksum, the rollout complete, the CR Ready again."""

    def rolled() -> dict[str, Any] | None:
        d = asr.kube.get("deployment", name_of(deploy), asr.namespace)
        checksum = ((d or {})["spec"]["template"]["metadata"].get("annotations") or {}).get(CHECKSUM_ANNOTATION)
        new = set(replicasets()) - before
        return d if checksum and checksum != before_checksum and new else None

    wait_for(rolled, timeout=scaled(180), what="a new ReplicaSet with a new config checksum", describe=asr.state)
    asr.kube.kubectl(
        "rollout",
        "status",
        f"deployment/{name_of(deploy)}",
        "-n",
        asr.namespace,
        f"--timeout={int(scaled(600))}s",
        timeout=scaled(660),
    )
    cm = next(c for c in asr.owned("configmaps") if "ASR_MAX_BATCH_SIZE" in (c.get("data") or {}))
    assert cm["data"]["ASR_MAX_BATCH_SIZE"] == "4", cm["data"]
    wait_for(
        lambda: is_ready(asr.cr()),
        timeout=scaled(300),
        what="Ready again after the rollout",
        describe=asr.state,
    )


def test_scaled_to_two_both_pods_serve(asr: Deployed) -> None:
    asr.kube.patch_merge(CRD_NAME, NAME, asr.namespace, {"spec": {"replicas": 2}})
    wait_for(lambda: len(ready_pods(asr)) == 2, timeout=scaled(600), what="2 ready pods", describe=asr.state)
    wait_for(lambda: (asr.cr() or {}).get("status", {}).get("readyReplicas") == 2, timeout=scaled(120),
             what="status.readyReplicas 2", describe=asr.state)  # fmt: skip
    audio = SAMPLE_WAV.read_bytes()
    for pod in ready_pods(asr):
        with pod_url(asr, pod) as url:
            resp = transcribe(url, audio)
        assert resp.status_code == 200, (name_of(pod), resp.text)
        assert normalize(resp.json()["text"]) == normalize(SAMPLE_TXT.read_text()), name_of(pod)


def test_delete_cleans_up(asr: Deployed) -> None:
    children = {kind: [name_of(o) for o in asr.owned(kind)] for kind in ("deployments", "services", "configmaps")}
    assert all(children.values()), children
    asr.kube.kubectl(
        "delete",
        CRD_NAME,
        NAME,
        "-n",
        asr.namespace,
        "--wait=true",
        f"--timeout={int(scaled(180))}s",
        timeout=scaled(240),
    )

    def gone() -> bool:
        return all(asr.kube.get(kind, n, asr.namespace) is None for kind, names in children.items() for n in names)

    wait_for(gone, timeout=scaled(180), what=f"children deleted: {children}", describe=asr.state)
    assert asr.kube.get(CRD_NAME, NAME, asr.namespace) is None
