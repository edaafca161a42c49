"""Autoscaling on queue depth, end to end on the local cluster's real node with the real components
(tools/cluster/autoscalers.py): the inference pods' `asr_load` scraped by Prometheus, turned into replicas by
KEDA (operator + metrics API server + admission webhooks) or by the HPA controller reading it through
prometheus-adapter with the rule the chart ships. Load comes from asr-bench's closed-loop generator through the
Service. Each scenario is recorded (replicas, Prometheus' queue depth, the HPA's view) and drawn under
$E2E_ARTIFACTS (default e2e-results/): autoscaling-keda.png, autoscaling-hpa.png.

Bounds (README, "Autoscaling"): Prometheus scrapes every 2 s, KEDA polls every 5 s, the HPA controller syncs every
5 s; the replica count leaves 1 within SCALE_UP_WITHIN_S of the load starting and is back at 1 within
BACK_TO_MIN_WITHIN_S of it stopping (30 s stabilization, then one pod per 60 s).
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from asr_bench.clips import CLIP_SETS, Clip, load_dir
from asr_bench.load import CellResult, closed_loop

from e2e.deployed import Deployed, delete, deploy, manifest, name_of, service_url
from e2e.timeline import ARTIFACTS, Recorder, Timeline
from e2e.tools import CRD_NAME, SYSTEM_NAMESPACE, Images, Kube, scaled, wait_for

NAME = "scaler"
MAX_REPLICAS = 3
TARGET_QUEUE_DEPTH = 2  # per pod
CLIENTS = 12  # one request each in flight; batches of 1 on 0.5 CPU: the queue grows well past the target
SCALE_UP_WITHIN_S = 120.0
BACK_TO_MIN_WITHIN_S = 300.0
HOLD_AT_MAX_S = 20.0  # load kept on once every replica is ready: the plot shows the queue shared out


@pytest.fixture(scope="module")
def scaler(
    platform: Kube, namespace: str, images: Images, node_selector: dict[str, str], stack: Any
) -> Iterator[Deployed]:
    doc = manifest(NAME, namespace, images, node_selector)
    # One request per batch, none waited for: each pod's queue is simply the requests it has not started.
    doc["spec"]["batching"] = {"maxBatchSize": 1, "maxWaitMs": 0}
    d = deploy(platform, doc, direct=True)
    yield d
    delete(d)


def autoscaling(engine: str | None, prometheus_url: str) -> dict[str, Any]:
    if engine is None:
        return {"enabled": False}
    return {
        "enabled": True,
        "engine": engine,
        "minReplicas": 1,
        "maxReplicas": MAX_REPLICAS,
        "targetQueueDepth": TARGET_QUEUE_DEPTH,
        "pollingIntervalSeconds": 5,
        "scaleUpStabilizationSeconds": 0,
        "scaleDownStabilizationSeconds": 30,
        "prometheus": {"serverAddress": prometheus_url},
    }


def switch_engine(d: Deployed, engine: str | None, prometheus_url: str) -> None:
    d.kube.patch_merge(CRD_NAME, d.name, d.namespace, {"spec": {"autoscaling": autoscaling(engine, prometheus_url)}})


def autoscalers(d: Deployed) -> dict[str, list[str]]:
    """Every autoscaler in the namespace: ScaledObjects and HPAs (KEDA's own `keda-hpa-*` included)."""
    return {
        "scaledobjects": sorted(name_of(o) for o in d.kube.list("scaledobjects.keda.sh", d.namespace)),
        "hpa": sorted(name_of(o) for o in d.kube.list("hpa", d.namespace)),
    }


EXPECTED = {
    "keda": {"scaledobjects": [NAME], "hpa": [f"keda-hpa-{NAME}"]},
    "hpa": {"scaledobjects": [], "hpa": [NAME]},
    None: {"scaledobjects": [], "hpa": []},
}


def hpa_reads_its_metric(d: Deployed) -> bool:
    """The HPA (ours or KEDA's) has read the queue metric: ScalingActive True and a current value."""
    for hpa in d.kube.list("hpa", d.namespace):
        status = hpa.get("status") or {}
        active = any(c["type"] == "ScalingActive" and c["status"] == "True" for c in status.get("conditions") or [])
        if active and status.get("currentMetrics"):
            return True
    return False


class BenchLoad:
    """asr-bench's closed-loop load generator in a thread, against the Service, until stopped. Every request is
    different audio (the held-out demo clips, each dithered VARIANTS ways): the server's result cache (256 entries,
    LRU) answers none of them, as with distinct users."""

    VARIANTS = 40

    def __init__(self, url: str, clients: int, max_s: float) -> None:
        self.clips = _distinct_clips(self.VARIANTS)
        self.url, self.clients, self.max_s = url, clients, max_s
        self.stopped = threading.Event()
        self.result: CellResult | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.result = asyncio.run(
            closed_loop(self.url, self.clips, {}, concurrency=self.clients, requests=10**9, max_s=self.max_s,
                        timeout_s=120, stop=self.stopped.is_set)
        )  # fmt: skip

    def __enter__(self) -> BenchLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self._thread.join(timeout=180)

    def codes(self) -> dict[int, int]:
        return dict(Counter(s.status for s in (self.result.samples if self.result else [])))


def _distinct_clips(variants: int) -> list[Clip]:
    rng = np.random.default_rng(0)
    clips = []
    for clip in load_dir(CLIP_SETS["demo-heldout"]):
        samples = (clip.samples() * 32767).astype(np.int16)
        for i in range(variants):
            dithered = samples + rng.integers(-2, 3, size=samples.shape, dtype=np.int16)
            wav = io.BytesIO()
            sf.write(wav, dithered, 16000, format="WAV", subtype="PCM_16")
            clips.append(Clip(f"{i}-{clip.name}", wav.getvalue(), clip.duration_s))
    rng.shuffle(clips)
    return clips


def scale_out_and_back(d: Deployed, stack: Any, engine: str) -> Timeline:
    """Load → the replica count rises (to the max) → load stops → back to the minimum; recorded throughout."""
    prometheus_url = stack.prometheus_url
    switch_engine(d, engine, prometheus_url)
    wait_for(lambda: autoscalers(d) == EXPECTED[engine], timeout=scaled(120), what=f"the {engine} autoscaler",
             describe=lambda: str(autoscalers(d)))  # fmt: skip
    wait_for(lambda: hpa_reads_its_metric(d), timeout=scaled(180), what="the HPA reading asr_load",
             describe=lambda: d.kube.describe("hpa,scaledobjects.keda.sh", d.namespace))  # fmt: skip
    title = f"engine: {engine} (min 1, max {MAX_REPLICAS}, target {TARGET_QUEUE_DEPTH} queued per pod)"
    with Recorder(d.kube, d.namespace, d.name, prometheus_url, title) as rec, service_url(d) as url:
        wait_for(lambda: len(rec.timeline.points) >= 3, timeout=60, what="a baseline")
        assert rec.last and rec.last.replicas == 1, rec.timeline.points
        with BenchLoad(url, CLIENTS, max_s=scaled(600)) as load:
            rec.load = True
            rec.mark("load start")
            wait_for(lambda: rec.last and rec.last.replicas > 1, timeout=scaled(SCALE_UP_WITHIN_S), interval=1,
                     what=f"{engine}: more than one replica under load", describe=lambda: _state(d, rec))  # fmt: skip
            rec.mark("scaled up")
            wait_for(lambda: rec.last and rec.last.ready == MAX_REPLICAS, timeout=scaled(420), interval=2,
                     what=f"{engine}: {MAX_REPLICAS} ready replicas", describe=lambda: _state(d, rec))  # fmt: skip
            rec.mark("all ready")
            threading.Event().wait(HOLD_AT_MAX_S)
        rec.load = False
        rec.mark("load stop")
        wait_for(lambda: rec.last and rec.last.replicas == 1, timeout=scaled(BACK_TO_MIN_WITHIN_S), interval=2,
                 what=f"{engine}: back to 1 replica", describe=lambda: _state(d, rec))  # fmt: skip
        rec.mark("back to min")
        threading.Event().wait(6)
    timeline = rec.timeline
    timeline.save(ARTIFACTS / f"autoscaling-{engine}")
    codes = load.codes()
    assert codes.get(200), f"no request answered under load: {codes}"
    assert all(code in (200, 429) for code in codes), f"only 200 or a 429 (backpressure) expected: {codes}"
    during = [p.server_load for p in timeline.points if p.load and p.server_load is not None]
    assert during and max(during) > TARGET_QUEUE_DEPTH, f"the queue never passed the target: {during}"
    return timeline


def _state(d: Deployed, rec: Recorder) -> str:
    described = d.kube.describe("hpa,scaledobjects.keda.sh,deploy,pods", d.namespace)
    return f"last samples: {rec.timeline.points[-5:]}\n{described}"


def test_keda_scales_on_queue_depth_and_back(scaler: Deployed, stack: Any) -> None:
    timeline = scale_out_and_back(scaler, stack, "keda")
    assert max(p.replicas for p in timeline.points) == MAX_REPLICAS


def test_hpa_through_prometheus_adapter_scales_and_back(scaler: Deployed, stack: Any) -> None:
    timeline = scale_out_and_back(scaler, stack, "hpa")
    assert max(p.replicas for p in timeline.points) == MAX_REPLICAS


def test_engine_switches_leave_one_autoscaler_and_no_denials(scaler: Deployed, stack: Any) -> None:
    """keda → hpa → off → keda on a cluster whose KEDA webhook refuses a second autoscaler for a workload: each step
    ends with exactly the expected autoscaler, and the operator never ran into the webhook (no 403 loop)."""
    since = _operator_log_lines(scaler.kube)
    for engine in ("keda", "hpa", None, "keda"):
        switch_engine(scaler, engine, stack.prometheus_url)
        wait_for(lambda e=engine: autoscalers(scaler) == EXPECTED[e], timeout=scaled(120),  # type: ignore[misc]
                 what=f"only the {engine or 'no'} autoscaler", describe=lambda: str(autoscalers(scaler)))  # fmt: skip
        if engine == "hpa":
            _webhook_refuses_a_second_autoscaler(scaler)
    denied = [line for line in _operator_log_lines(scaler.kube)[len(since) :] if "denied the request" in line]
    assert not denied, "the operator hit KEDA's webhook:\n" + "\n".join(denied[:5])
    switch_engine(scaler, None, stack.prometheus_url)


def _webhook_refuses_a_second_autoscaler(d: Deployed) -> None:
    """KEDA's webhook is live: a ScaledObject for a Deployment an HPA already scales is refused."""
    intruder = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "intruder", "namespace": d.namespace},
        "spec": {
            "scaleTargetRef": {"name": d.name},
            "triggers": [{"type": "cpu", "metricType": "Utilization", "metadata": {"value": "50"}}],
        },
    }
    proc = d.kube.kubectl("apply", "-f", "-", input=json.dumps(intruder), check=False)
    assert proc.returncode != 0 and "denied the request" in proc.stderr, (proc.stdout, proc.stderr)


def _operator_log_lines(kube: Kube) -> list[str]:
    proc = kube.kubectl("logs", "-n", SYSTEM_NAMESPACE, "-l", "app.kubernetes.io/component=operator", "--tail=-1",
                        quiet=True)  # fmt: skip
    return proc.stdout.splitlines()
