"""Scale to zero, end to end on the local cluster's real node: an ASRDeployment with `autoscaling.minReplicas: 0`
(engine keda) goes to 0 pods when idle, and requests that arrive then are held by KEDA's HTTP add-on (its
interceptor and external scaler built from the add-on's Go module, tools/cluster/http_addon.py) while KEDA scales the
Deployment 0 → 1 and the pod loads and warms its model, then answered — not refused. The cold start (first request
at zero pods → its answer) is measured against a warm request through the same path and saved with the replica
timeline under $E2E_ARTIFACTS (scale-to-zero.json / .png).

Bounds: KEDA's cooldown is the CR's scaleDownStabilizationSeconds (30 s here) after the last active trigger;
polling every 5 s. The interceptor holds a request up to the pod's startup budget (the HTTPScaledObject's
conditionWait, 600 s for the demo model).
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import time
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf

from e2e.deployed import SAMPLE_TXT, SAMPLE_WAV, Deployed, condition, delete, manifest, normalize
from e2e.timeline import ARTIFACTS, Recorder
from e2e.tools import Images, Kube, scaled, wait_for

NAME = "idle"
COOLDOWN_S = 30
BACK_TO_ZERO_WITHIN_S = 180.0
FIRST_REQUESTS = 3  # arrive together at zero pods: all held, all answered


@pytest.fixture(scope="module")
def idle(platform: Kube, namespace: str, images: Images, node_selector: dict[str, str], stack: Any) -> Any:
    addresses = stack.addresses()
    doc = manifest(NAME, namespace, images, node_selector)
    doc["spec"]["autoscaling"] = {
        "enabled": True,
        "engine": "keda",
        "minReplicas": 0,
        "maxReplicas": 2,
        "targetQueueDepth": 4,
        "pollingIntervalSeconds": 5,
        "scaleDownStabilizationSeconds": COOLDOWN_S,
        "prometheus": {"serverAddress": addresses["prometheus_url"]},
        "httpAddon": {"scalerAddress": addresses["http_scaler_address"]},
    }
    # Created with one pod (replicas 1 clamped into [0, 2]), which KEDA leaves up for one cooldown
    # (initialCooldownPeriod) — unless it takes longer to load: Ready then means ScaledToZero, not a ready pod.
    platform.apply(doc)
    d = Deployed(platform, namespace, NAME, direct=True)
    wait_for(lambda: (condition(d.cr(), "Ready") or {}).get("status") == "True", timeout=scaled(600), interval=2,
             what="the ASRDeployment Ready", describe=d.state)  # fmt: skip
    yield d
    delete(d)


def distinct_sample(seed: int) -> bytes:
    """samples/demo.wav with ±1 LSB of dither: the same words, different bytes (the server's result cache would
    answer a repeated upload without the model, and a warm request would then time the cache)."""
    samples, rate = sf.read(SAMPLE_WAV, dtype="int16")
    dithered = samples + np.random.default_rng(seed).integers(-1, 2, size=samples.shape, dtype=np.int16)
    out = io.BytesIO()
    sf.write(out, dithered, rate, format="WAV", subtype="PCM_16")
    return out.getvalue()


def through_interceptor(interceptor_url: str, d: Deployed, audio: bytes) -> httpx.Response:
    """A transcription sent the way clients of a scale-to-zero service send it: to the interceptor, the service's
    name as the Host."""
    return httpx.post(
        f"{interceptor_url}/v1/audio/transcriptions",
        headers={"Host": f"{d.name}.{d.namespace}"},
        files={"file": ("demo.wav", audio, "audio/wav")},
        timeout=scaled(600),
    )


def _timed(interceptor_url: str, d: Deployed, seed: int) -> tuple[float, httpx.Response]:
    audio = distinct_sample(seed)
    start = time.monotonic()
    resp = through_interceptor(interceptor_url, d, audio)
    return time.monotonic() - start, resp


def _replicas(d: Deployed) -> int:
    deployment = d.kube.get("deployment", d.name, d.namespace) or {}
    return int((deployment.get("spec") or {}).get("replicas", -1))


def _state(d: Deployed) -> str:
    return d.kube.describe("scaledobjects.keda.sh,httpscaledobjects.http.keda.sh,hpa,deploy,pods", d.namespace)


def _answered(resp: httpx.Response) -> str:
    assert resp.status_code == 200, (resp.status_code, resp.text[:500])
    return str(resp.json()["text"])


def test_idle_goes_to_zero_and_the_first_requests_are_held_then_answered(idle: Deployed, stack: Any) -> None:
    interceptor = stack.addresses()["interceptor_url"]
    (hso,) = idle.owned("httpscaledobjects.http.keda.sh")
    assert hso["metadata"]["annotations"]["httpscaledobject.keda.sh/skip-scaledobject-creation"] == "true"
    (so,) = idle.owned("scaledobjects.keda.sh")
    assert [t["type"] for t in so["spec"]["triggers"]] == ["prometheus", "external-push"]

    with Recorder(idle.kube, idle.namespace, idle.name, stack.prometheus_url, "scale to zero (min 0, max 2)") as rec:
        rec.mark("idle")
        wait_for(lambda: _replicas(idle) == 0, timeout=scaled(BACK_TO_ZERO_WITHIN_S), interval=2,
                 what="idle: the Deployment at 0 replicas", describe=lambda: _state(idle))  # fmt: skip
        rec.mark("at zero")
        wait_for(lambda: not idle.kube.list("pods", idle.namespace, f"app.kubernetes.io/instance={idle.name}"),
                 timeout=scaled(120), what="no pod left", describe=lambda: _state(idle))  # fmt: skip
        ready = condition(idle.cr(), "Ready") or {}
        assert (ready.get("status"), ready.get("reason")) == ("True", "ScaledToZero"), ready

        rec.mark("first requests")
        with concurrent.futures.ThreadPoolExecutor(FIRST_REQUESTS) as pool:
            cold = list(pool.map(lambda seed: _timed(interceptor, idle, seed), range(FIRST_REQUESTS)))
        rec.mark("answered")
        for _, resp in cold:
            assert normalize(_answered(resp)) == normalize(SAMPLE_TXT.read_text())
        assert any(r.headers.get("X-KEDA-HTTP-Cold-Start") == "true" for _, r in cold), [r.headers for _, r in cold]
        warm = [_timed(interceptor, idle, seed) for seed in range(FIRST_REQUESTS, FIRST_REQUESTS + 3)]
        for _, resp in warm:
            assert normalize(_answered(resp)) == normalize(SAMPLE_TXT.read_text())
            assert resp.headers.get("X-KEDA-HTTP-Cold-Start") == "false"

        rec.mark("idle again")
        wait_for(lambda: _replicas(idle) == 0, timeout=scaled(BACK_TO_ZERO_WITHIN_S), interval=2,
                 what="idle again: back to 0 replicas", describe=lambda: _state(idle))  # fmt: skip
        rec.mark("back at zero")
        time.sleep(6)  # a few samples at zero for the plot
    timeline = rec.timeline
    timeline.save(ARTIFACTS / "scale-to-zero")
    cold_s, warm_s = sorted(s for s, _ in cold), sorted(s for s, _ in warm)
    report = {
        "cold_start_s": cold_s,
        "warm_s": warm_s,
        "cold_over_warm": round(cold_s[-1] / warm_s[len(warm_s) // 2], 1),
        "back_to_zero_s": timeline.marks["back at zero"] - timeline.marks["idle again"],
    }
    (ARTIFACTS / "scale-to-zero-times.json").write_text(json.dumps(report, indent=1))
    print("scale to zero:", json.dumps(report))
    woken = [
        p.replicas for p in timeline.points if timeline.marks["first requests"] <= p.t <= timeline.marks["idle again"]
    ]
    assert woken and max(woken) >= 1, timeline.points
