"""End to end on a real cluster: chart → operator → ASRDeployment (CPU, demo model) → transcription →
metrics → batching change rolls out → (KEDA scale-out) → delete cleans up. Tests run in file order and share
one ASRDeployment; each asserts one piece of the contract."""

from __future__ import annotations

import contextlib
import os
import re
import threading
import unicodedata
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import yaml

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


def manifest(namespace: str, images: Images) -> dict[str, Any]:
    return {
        "apiVersion": "asr-platform.io/v1alpha1",
        "kind": "ASRDeployment",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {
            "model": {"source": "builtin:demo"},
            "device": "cpu",
            "image": {
                "repository": images.inference.repository,
                "tag": images.inference.tag,
                "pullPolicy": "IfNotPresent",
            },
            "replicas": 1,
            "batching": {"maxBatchSize": 8, "maxWaitMs": 5},
            "resources": {
                "requests": {"cpu": "250m", "memory": "512Mi"},
                "limits": {"memory": "2Gi"},
                "shmSize": "128Mi",
            },
        },
    }


@pytest.fixture(scope="module")
def asr(platform: Kube, namespace: str, images: Images) -> Iterator[Deployed]:
    d = Deployed(platform, namespace, NAME)
    platform.apply(manifest(namespace, images))
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
    asr.kube.kubectl(
        "wait",
        "--for=condition=Available",
        f"deployment/{_name(deploy)}",
        "-n",
        asr.namespace,
        f"--timeout={int(scaled(60))}s",
        timeout=scaled(90),
    )


def test_transcribes_the_sample_through_the_service(asr: Deployed) -> None:
    assert SAMPLE_WAV.is_file() and SAMPLE_TXT.is_file(), "samples/demo.wav and samples/demo.txt are needed"
    target, port = service_target(asr)
    with port_forward(asr.kube, asr.namespace, target, port, timeout=scaled(60)) as url:
        assert httpx.get(f"{url}/readyz", timeout=30).status_code == 200
        resp = transcribe(url, SAMPLE_WAV.read_bytes())
    assert resp.status_code == 200, resp.text
    got = resp.json()["text"]
    assert _normalize(got) == _normalize(SAMPLE_TXT.read_text()), f"transcript {got!r}"


def test_metrics_count_the_request(asr: Deployed) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    target, port = service_target(asr)
    with port_forward(asr.kube, asr.namespace, target, port, timeout=scaled(60)) as url:
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
    asr.kube.patch_merge(CRD_NAME, NAME, asr.namespace, {"spec": {"batching": {"maxBatchSize": 4}}})

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
        target, port = service_target(asr)
        with (
            port_forward(asr.kube, asr.namespace, target, port, timeout=scaled(60)) as url,
            ThreadPoolExecutor(max_workers=32) as pool,
        ):

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
