"""The ASRDeployment the e2e modules deploy, and how they reach and read it (shared by test_platform.py and
test_autoscaling.py)."""

from __future__ import annotations

import contextlib
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import yaml

from e2e.tools import CRD_NAME, ROOT, SYSTEM_NAMESPACE, Images, Kube, port_forward, scaled, wait_for

SAMPLE_WAV = ROOT / "samples" / "demo.wav"
SAMPLE_TXT = ROOT / "samples" / "demo.txt"
EXAMPLE = ROOT / "examples" / "demo-cpu.yaml"
CHECKSUM_ANNOTATION = "asr-platform.io/config-checksum"


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
        assert len(objs) == 1, f"expected one {kind} owned by the ASRDeployment, got {[name_of(o) for o in objs]}"
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


def name_of(obj: dict[str, Any]) -> str:
    return obj["metadata"]["name"]


def condition(cr: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    for c in ((cr or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            return c
    return None


def is_ready(cr: dict[str, Any] | None) -> bool:
    """Ready=True for the current generation, with at least one ready pod."""
    if not cr:
        return False
    status = cr.get("status") or {}
    cond = condition(cr, "Ready")
    generation = cr["metadata"].get("generation")
    observed = status.get("observedGeneration")
    return bool(
        cond
        and cond.get("status") == "True"
        and (status.get("readyReplicas") or 0) >= 1
        and (observed is None or generation is None or observed >= generation)
    )


def normalize(text: str) -> str:
    """Case, punctuation and spacing do not count."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    return re.sub(r"\s+", " ", text).strip()


def manifest(name: str, namespace: str, images: Images, node_selector: dict[str, str]) -> dict[str, Any]:
    """examples/demo-cpu.yaml (the README's sample) as deployed here: this checkout's image, pinned where pods
    really run, and half a core per pod so that two replicas and the operator fit a 2-core node."""
    (doc,) = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]
    doc["metadata"] = {"name": name, "namespace": namespace}
    spec = doc["spec"]
    assert spec["model"]["source"] == "builtin:demo" and spec["device"] == "cpu", spec
    spec["image"] = {"repository": images.inference.repository, "tag": images.inference.tag}
    spec["resources"]["requests"]["cpu"] = "500m"
    spec["batching"] = {"maxBatchSize": 8, "maxWaitMs": 5}
    if node_selector:
        spec["pod"] = {**spec.get("pod", {}), "nodeSelector": node_selector}
    return doc


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
    return f"svc/{name_of(svc)}", int(port["port"])


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


@contextlib.contextmanager
def pod_url(d: Deployed, pod: dict[str, Any]) -> Iterator[str]:
    port = pod["spec"]["containers"][0]["ports"][0]["containerPort"]
    if d.direct:
        yield f"http://{pod['status']['podIP']}:{port}"
        return
    with port_forward(d.kube, d.namespace, f"pod/{name_of(pod)}", port, timeout=scaled(60)) as url:
        yield url


def deploy(kube: Kube, doc: dict[str, Any], *, direct: bool, timeout_s: float = 900) -> Deployed:
    """Apply an ASRDeployment and wait until it is Ready."""
    d = Deployed(kube, doc["metadata"]["namespace"], doc["metadata"]["name"], direct=direct)
    kube.apply(doc)
    wait_for(lambda: is_ready(d.cr()), timeout=scaled(timeout_s), what="ASRDeployment Ready", interval=5,
             describe=d.state)  # fmt: skip
    return d


def delete(d: Deployed) -> None:
    d.kube.kubectl(
        "delete", CRD_NAME, d.name, "-n", d.namespace, "--ignore-not-found", "--wait=true",
        f"--timeout={int(scaled(180))}s", timeout=scaled(240), check=False,
    )  # fmt: skip
