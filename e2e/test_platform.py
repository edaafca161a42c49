"""End to end on a real cluster: chart → operator → ASRDeployment (CPU, demo model) → transcription →
metrics → batching change rolls out → (KEDA scale-out) → delete cleans up. Tests run in file order and share
one ASRDeployment; each asserts one piece of the contract."""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import threading
import time
import unicodedata
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import yaml
from load_loop import LoadLoop  # tests/ is on pytest's pythonpath

from e2e.tools import CRD_NAME, ROOT, SYSTEM_NAMESPACE, Images, Kube, port_forward, scaled, wait_for

SAMPLE_WAV = ROOT / "samples" / "demo.wav"
SAMPLE_TXT = ROOT / "samples" / "demo.txt"
EXAMPLE = ROOT / "examples" / "demo-cpu.yaml"
CHECKSUM_ANNOTATION = "asr-platform.io/config-checksum"
NAME = "demo"


@dataclass
class Deployed:
    kube: Kube
    namespace: str
    name: str
    direct: bool = False  # ClusterIPs and pod IPs are reachable from here (the local cluster's real node)

    def cr(self) -> dict[str, Any] | None:
        return self.kube.get(CRD_NAME, self.name, self.namespace)

    def owned(self, kind: str) -> list[dict[str, Any]]:
        """Objects of `kind` in the namespace whose ownerReferences point at the ASRDeployment."""
        cr = self.cr()
        assert cr is not None, "the ASRDeployment is gone"
        uid = cr["metadata"]["uid"]
        return [
            o
            for o in self.kube.list(kind, self.namespace)
            if any(ref.get("uid") == uid for ref in o["metadata"].get("ownerReferences") or [])
        ]

    def one_owned(self, kind: str) -> dict[str, Any]:
        objs = self.owned(kind)
        assert len(objs) == 1, f"expected one {kind} owned by the ASRDeployment, got {[_name(o) for o in objs]}"
        return objs[0]

    def state(self) -> str:
        cr = self.cr()
        status = yaml.safe_dump((cr or {}).get("status"), sort_keys=False)
        op_logs = self.kube.logs(SYSTEM_NAMESPACE, "app.kubernetes.io/component=operator", tail=40)
        srv_logs = self.kube.logs(self.namespace, f"app.kubernetes.io/instance={self.name}", tail=40)
        return (
            f"ASRDeployment status:\n{status}\n"
            f"{self.kube.describe('deploy,rs,pods,svc,cm', self.namespace)}\n"
            f"operator logs:\n{op_logs}\nserver logs:\n{srv_logs}"
        )


def _name(obj: dict[str, Any]) -> str:
    return obj["metadata"]["name"]


def _condition(cr: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    for c in ((cr or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            return c
    return None


def _ready(cr: dict[str, Any] | None) -> bool:
    """Ready=True for the current generation, with at least one ready pod."""
    if not cr:
        return False
    status = cr.get("status") or {}
    cond = _condition(cr, "Ready")
    generation = cr["metadata"].get("generation")
    observed = status.get("observedGeneration")
    return bool(
        cond
        and cond.get("status") == "True"
        and (status.get("readyReplicas") or 0) >= 1
        and (observed is None or generation is None or observed >= generation)
    )


def _normalize(text: str) -> str:
    """Case, punctuation and spacing do not count."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    return re.sub(r"\s+", " ", text).strip()


def manifest(namespace: str, images: Images, node_selector: dict[str, str]) -> dict[str, Any]:
    """examples/demo-cpu.yaml (the README's sample) as deployed here: this checkout's image, pinned where pods
    really run, and half a core per pod so that two replicas and the operator fit a 2-core node."""
    (doc,) = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]
    doc["metadata"] = {"name": NAME, "namespace": namespace}
    spec = doc["spec"]
    assert spec["model"]["source"] == "builtin:demo" and spec["device"] == "cpu", spec
    spec["image"] = {"repository": images.inference.repository, "tag": images.inference.tag}
    spec["resources"]["requests"]["cpu"] = "500m"
    spec["batching"] = {"maxBatchSize": 8, "maxWaitMs": 5}
    if node_selector:
        spec["pod"] = {**spec.get("pod", {}), "nodeSelector": node_selector}
    return doc


@pytest.fixture(scope="module")
def asr(
    platform: Kube, namespace: str, images: Images, node_selector: dict[str, str], local_cluster: Any
) -> Iterator[Deployed]:
    d = Deployed(platform, namespace, NAME, direct=local_cluster is not None)
    platform.apply(manifest(namespace, images, node_selector))
    wait_for(lambda: _ready(d.cr()), timeout=scaled(900), what="ASRDeployment Ready", interval=5, describe=d.state)
    yield d
    platform.kubectl(
        "delete",
        CRD_NAME,
        NAME,
        "-n",
        namespace,
        "--ignore-not-found",
        "--wait=true",
        f"--timeout={int(scaled(180))}s",
        timeout=scaled(240),
        check=False,
    )


def transcribe(base_url: str, audio: bytes, timeout: float = 120) -> httpx.Response:
    return httpx.post(
        f"{base_url}/v1/audio/transcriptions",
        files={"file": ("demo.wav", audio, "audio/wav")},
        timeout=timeout,
    )


def service_target(d: Deployed) -> tuple[str, int]:
    svc = d.one_owned("services")
    ports = svc["spec"]["ports"]
    port = next((p for p in ports if p.get("name") == "http"), ports[0])
    return f"svc/{_name(svc)}", int(port["port"])


@contextlib.contextmanager
def service_url(d: Deployed) -> Iterator[str]:
    """The Service's base URL: its ClusterIP through kube-proxy where that is reachable, else a port-forward."""
    target, port = service_target(d)
    if d.direct:
        yield f"http://{d.one_owned('services')['spec']['clusterIP']}:{port}"
        return
    with port_forward(d.kube, d.namespace, target, port, timeout=scaled(60)) as url:
        yield url


def ready_pods(d: Deployed) -> list[dict[str, Any]]:
    selector = f"app.kubernetes.io/instance={d.name}"
    return [
        p
        for p in d.kube.list("pods", d.namespace, selector=selector)
        if not p["metadata"].get("deletionTimestamp")
        and any(c["type"] == "Ready" and c["status"] == "True" for c in (p.get("status") or {}).get("conditions", []))
    ]


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
    assert status.get("endpoint") == f"http://{_name(svc)}.{asr.namespace}.svc:{port}", status
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
        f"deployment/{_name(deploy)}",
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
    assert _normalize(got) == _normalize(SAMPLE_TXT.read_text()), f"transcript {got!r}"


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
    assert ("asr_queue_depth", ()) in samples, sorted({n for n, _ in samples})
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
        d = asr.kube.get("deployment", _name(deploy), asr.namespace)
        checksum = ((d or {})["spec"]["template"]["metadata"].get("annotations") or {}).get(CHECKSUM_ANNOTATION)
        new = set(replicasets()) - before
        return d if checksum and checksum != before_checksum and new else None

    wait_for(rolled, timeout=scaled(180), what="a new ReplicaSet with a new config checksum", describe=asr.state)
    asr.kube.kubectl(
        "rollout",
        "status",
        f"deployment/{_name(deploy)}",
        "-n",
        asr.namespace,
        f"--timeout={int(scaled(600))}s",
        timeout=scaled(660),
    )
    cm = next(c for c in asr.owned("configmaps") if "ASR_MAX_BATCH_SIZE" in (c.get("data") or {}))
    assert cm["data"]["ASR_MAX_BATCH_SIZE"] == "4", cm["data"]
    wait_for(
        lambda: _ready(asr.cr()),
        timeout=scaled(300),
        what="Ready again after the rollout",
        describe=asr.state,
    )


@contextlib.contextmanager
def pod_url(d: Deployed, pod: dict[str, Any]) -> Iterator[str]:
    port = pod["spec"]["containers"][0]["ports"][0]["containerPort"]
    if d.direct:
        yield f"http://{pod['status']['podIP']}:{port}"
        return
    with port_forward(d.kube, d.namespace, f"pod/{_name(pod)}", port, timeout=scaled(60)) as url:
        yield url


def test_scaled_to_two_both_pods_serve(asr: Deployed) -> None:
    asr.kube.patch_merge(CRD_NAME, NAME, asr.namespace, {"spec": {"replicas": 2}})
    wait_for(lambda: len(ready_pods(asr)) == 2, timeout=scaled(600), what="2 ready pods", describe=asr.state)
    wait_for(lambda: (asr.cr() or {}).get("status", {}).get("readyReplicas") == 2, timeout=scaled(120),
             what="status.readyReplicas 2", describe=asr.state)  # fmt: skip
    audio = SAMPLE_WAV.read_bytes()
    for pod in ready_pods(asr):
        with pod_url(asr, pod) as url:
            resp = transcribe(url, audio)
        assert resp.status_code == 200, (_name(pod), resp.text)
        assert _normalize(resp.json()["text"]) == _normalize(SAMPLE_TXT.read_text()), _name(pod)


def test_keda_scales_out_under_load(asr: Deployed) -> None:
    if os.environ.get("E2E_KEDA", "") in ("", "0"):
        pytest.skip("KEDA scale-out is opt-in: set E2E_KEDA=1 and E2E_PROMETHEUS_ADDRESS (KEDA + Prometheus needed)")
    prometheus = os.environ.get("E2E_PROMETHEUS_ADDRESS")
    assert prometheus, "E2E_KEDA=1 needs E2E_PROMETHEUS_ADDRESS (a Prometheus that scrapes the inference pods)"
    assert asr.kube.get("crd", "scaledobjects.keda.sh"), "E2E_KEDA=1 but KEDA's CRDs are not installed"
    autoscaling = {
        "enabled": True,
        "engine": "keda",
        "minReplicas": 1,
        "maxReplicas": 3,
        "targetQueueDepth": 1,
        "pollingIntervalSeconds": 5,
        "scaleUpStabilizationSeconds": 0,
        "prometheus": {"serverAddress": prometheus},
    }
    spec = {"autoscaling": autoscaling, "batching": {"maxBatchSize": 1, "maxWaitMs": 0}}
    asr.kube.patch_merge(CRD_NAME, NAME, asr.namespace, {"spec": spec})
    try:
        wait_for(lambda: asr.owned("scaledobjects.keda.sh"), timeout=scaled(120), what="the ScaledObject")
        asr.kube.kubectl(
            "rollout",
            "status",
            "deployment/" + _name(asr.one_owned("deployments")),
            "-n",
            asr.namespace,
            f"--timeout={int(scaled(600))}s",
            timeout=scaled(660),
        )
        audio = SAMPLE_WAV.read_bytes()
        stop = threading.Event()
        with service_url(asr) as url, ThreadPoolExecutor(max_workers=32) as pool:

            def hammer() -> None:
                while not stop.is_set():
                    # 429s/timeouts are expected under overload; the replica count is what counts.
                    with contextlib.suppress(httpx.HTTPError):
                        transcribe(url, audio, timeout=60)

            for _ in range(32):
                pool.submit(hammer)
            try:
                wait_for(
                    lambda: (asr.one_owned("deployments")["spec"].get("replicas") or 0) > 1,
                    timeout=scaled(600),
                    what="KEDA to scale the Deployment above 1 replica",
                    interval=5,
                    describe=lambda: asr.kube.describe("scaledobjects.keda.sh,hpa,deploy,pods", asr.namespace),
                )
            finally:
                stop.set()
    finally:
        asr.kube.patch_merge(CRD_NAME, NAME, asr.namespace, {"spec": {"autoscaling": {"enabled": False}}})


def test_delete_cleans_up(asr: Deployed) -> None:
    children = {kind: [_name(o) for o in asr.owned(kind)] for kind in ("deployments", "services", "configmaps")}
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
