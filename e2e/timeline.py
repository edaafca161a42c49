"""What an autoscaling run looked like over time: replicas (wanted and ready), the queue depth Prometheus holds and the
value the HPA acted on, sampled every few seconds while a scenario runs, saved as JSON and drawn as a PNG."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from asr_operator.quantity import parse_quantity

from e2e.tools import ROOT, Kube

SAMPLE_EVERY_S = 2.0
ARTIFACTS = Path(os.environ.get("E2E_ARTIFACTS") or ROOT / "e2e-results")  # where the scenarios save their timelines


@dataclass
class Point:
    t: float  # seconds since the recording started
    replicas: int  # the Deployment's spec.replicas (what the autoscaler asked for)
    ready: int  # its status.readyReplicas
    server_load: float | None  # Prometheus: the ASRDeployment's asr_load (queued items + streams), summed over its pods
    hpa_metric: float | None  # the HPA's status.currentMetrics value (per pod), what it scaled on
    hpa_desired: int | None
    load: bool  # the load generator was running


@dataclass
class Timeline:
    title: str
    points: list[Point] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)  # event -> t

    def first(self, predicate: Any, after: float = 0.0) -> float | None:
        return next((p.t for p in self.points if p.t >= after and predicate(p)), None)

    def save(self, path_stem: Path) -> Path:
        path_stem.parent.mkdir(parents=True, exist_ok=True)
        data = {"title": self.title, "marks": self.marks, "points": [asdict(p) for p in self.points]}
        path_stem.with_suffix(".json").write_text(json.dumps(data, indent=1))
        return self.plot(path_stem.with_suffix(".png"))

    def plot(self, path: Path) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        t = [p.t for p in self.points]
        fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(9, 5.5), height_ratios=[1, 1])
        top.step(t, [p.replicas for p in self.points], where="post", label="replicas wanted (Deployment spec)")
        top.step(t, [p.ready for p in self.points], where="post", label="replicas ready", linestyle="--")
        top.set_ylabel("replicas")
        top.set_ylim(0, max([p.replicas for p in self.points] + [1]) + 1)
        top.legend(loc="upper right", fontsize=8)
        bottom.plot(t, [p.server_load for p in self.points], label="asr_load, sum over pods (Prometheus)")
        bottom.plot(t, [p.hpa_metric for p in self.points], label="per-pod value the HPA scaled on", linestyle="--")
        bottom.set_ylabel("requests queued")
        bottom.set_xlabel("seconds")
        bottom.legend(loc="upper right", fontsize=8)
        for ax in (top, bottom):
            load = [p.t for p in self.points if p.load]
            if load:
                ax.axvspan(min(load), max(load), color="tab:orange", alpha=0.12, lw=0)
            ax.grid(alpha=0.3)
        top.set_title(f"{self.title} (shaded: load from asr-bench)", fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


class Recorder:
    """Samples the state of one ASRDeployment's scaling in a thread (`with Recorder(...) as rec:`)."""

    def __init__(self, kube: Kube, namespace: str, name: str, prometheus_url: str, title: str) -> None:
        self.kube, self.namespace, self.name = kube, namespace, name
        self.prometheus_url = prometheus_url
        self.timeline = Timeline(title)
        self.load = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._start = 0.0

    def __enter__(self) -> Recorder:
        self._start = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def now(self) -> float:
        return round(time.monotonic() - self._start, 1)

    def mark(self, event: str) -> None:
        self.timeline.marks[event] = self.now()

    @property
    def last(self) -> Point | None:
        return self.timeline.points[-1] if self.timeline.points else None

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # a failed sample is a gap in the plot, not a failed test
                self.timeline.points.append(self._sample())
            self._stop.wait(SAMPLE_EVERY_S)

    def _sample(self) -> Point:
        t = self.now()
        deploy = self.kube.get("deployment", self.name, self.namespace) or {}
        hpas = self.kube.list("hpa", self.namespace)
        metric, desired = None, None
        if hpas:
            status = hpas[0].get("status") or {}
            desired = status.get("desiredReplicas")
            for m in status.get("currentMetrics") or []:
                current = (m.get("pods") or m.get("external") or {}).get("current") or {}
                value = current.get("averageValue") or current.get("value")
                metric = float(parse_quantity(value)) if value is not None else None
        return Point(
            t=t,
            replicas=int((deploy.get("spec") or {}).get("replicas") or 0),
            ready=int((deploy.get("status") or {}).get("readyReplicas") or 0),
            server_load=self.server_load(),
            hpa_metric=metric,
            hpa_desired=desired,
            load=self.load,
        )

    def server_load(self) -> float | None:
        query = f'sum(max by (pod) (asr_load{{namespace="{self.namespace}",app_kubernetes_io_instance="{self.name}"}}))'
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": query})
        with urllib.request.urlopen(url, timeout=5) as resp:
            result = json.loads(resp.read())["data"]["result"]
        return float(result[0]["value"][1]) if result else None
