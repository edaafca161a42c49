"""Benchmark: reconcile latency of asr-operator against kmock (an in-memory Kubernetes API).

For N ASRDeployments created one after another, measures the time from the CR's creation to all of its
children being present (ConfigMap, Deployment, Service, PDB, ScaledObject) and to its status carrying
observedGeneration. A benchmark script, not a test:

    .venv/bin/python tools/bench_reconcile.py --count 20
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from typing import Any

import kmock
import kopf
import yaml
from kopf.testing import KopfRunner

NS = "bench"
VERBS = {"get", "list", "watch", "create", "patch", "update", "delete"}
CHILDREN = {
    "v1/configmaps": ("ConfigMap", "{}-config"),
    "apps/v1/deployments": ("Deployment", "{}"),
    "v1/services": ("Service", "{}"),
    "policy/v1/poddisruptionbudgets": ("PodDisruptionBudget", "{}"),
    "keda.sh/v1alpha1/scaledobjects": ("ScaledObject", "{}"),
    "autoscaling/v2/horizontalpodautoscalers": ("HorizontalPodAutoscaler", None),
    "monitoring.coreos.com/v1/servicemonitors": ("ServiceMonitor", None),
}
ASRD = "asr-platform.io/v1alpha1/asrdeployments"
SPEC = {
    "model": {"source": "iic/SenseVoiceSmall"},
    "replicas": 2,
    "autoscaling": {"enabled": True, "prometheus": {"serverAddress": "http://prom:9090"}},
}


def _exists(k: Any, resource: str, name: str) -> bool:
    try:
        return not k.objects[resource, NS, name].deleted
    except KeyError:
        return False


def _observed(k: Any, name: str) -> bool:
    try:
        return (k.objects[ASRD, NS, name].raw.get("status") or {}).get("observedGeneration") == 1
    except (KeyError, ValueError):
        return False


async def bench(count: int, timeout: float) -> dict[str, list[float]]:
    from asr_operator.handlers import register
    from asr_operator.settings import OperatorSettings

    async with kmock.KubernetesEmulator() as k, kmock.Server(k):
        k.resources["v1/namespaces"] = kmock.ResourceInfo(kind="Namespace", namespaced=False, verbs=VERBS)
        k.resources["v1/events"] = kmock.ResourceInfo(kind="Event", namespaced=True, verbs=VERBS)
        k.resources[ASRD] = kmock.ResourceInfo(
            kind="ASRDeployment", namespaced=True, verbs=VERBS, subresources={"status", "scale"}
        )
        for resource, (kind, _) in CHILDREN.items():
            k.resources[resource] = kmock.ResourceInfo(kind=kind, namespaced=True, verbs=VERBS)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "kubeconfig")
            with open(path, "w") as f:
                yaml.safe_dump(
                    {
                        "apiVersion": "v1",
                        "kind": "Config",
                        "clusters": [{"name": "k", "cluster": {"server": str(k.url).rstrip("/")}}],
                        "users": [{"name": "u", "user": {"token": "t"}}],
                        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
                        "current-context": "c",
                    },
                    f,
                )
            os.environ["KUBECONFIG"] = path
            registry = kopf.OperatorRegistry()
            kopf.on.login(registry=registry)(kopf.login_with_kubeconfig)
            register(registry, OperatorSettings(resync_interval_s=3600))
            settings = kopf.OperatorSettings()
            settings.scanning.disabled = True
            runner = KopfRunner(["run", "--standalone", "--namespace", NS], registry=registry, settings=settings)
            await asyncio.to_thread(runner.__enter__)
            try:
                deadline = time.monotonic() + 30
                while not any(r.action == kmock.action.WATCH and r.resource and r.resource.plural == "asrdeployments"
                              for r in list(k)):  # fmt: skip
                    if time.monotonic() > deadline:
                        raise TimeoutError("the operator never watched asrdeployments")
                    await asyncio.sleep(0.02)
                children_s: list[float] = []
                status_s: list[float] = []
                for i in range(count):
                    name = f"asr-{i}"
                    body = {
                        "apiVersion": "asr-platform.io/v1alpha1",
                        "kind": "ASRDeployment",
                        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{i}", "resourceVersion": "1",
                                     "generation": 1},
                        "spec": SPEC,
                    }  # fmt: skip
                    start = time.perf_counter()
                    async with k.post(f"/apis/asr-platform.io/v1alpha1/namespaces/{NS}/asrdeployments", json=body):
                        pass
                    wanted = [(r, n.format(name)) for r, (_, n) in CHILDREN.items() if n]
                    got_children = None
                    while time.perf_counter() - start < timeout:
                        if got_children is None and all(_exists(k, r, n) for r, n in wanted):
                            got_children = time.perf_counter() - start
                        if got_children is not None and _observed(k, name):
                            break
                        await asyncio.sleep(0.002)
                    else:
                        raise TimeoutError(f"{name} not reconciled within {timeout}s")
                    assert got_children is not None
                    children_s.append(got_children)
                    status_s.append(time.perf_counter() - start)
            finally:
                await asyncio.to_thread(runner.__exit__, None, None, None)
    return {"children": children_s, "status": status_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=10, help="ASRDeployments to create (one at a time)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per ASRDeployment")
    args = parser.parse_args()
    results = asyncio.run(bench(args.count, args.timeout))
    for key, values in results.items():
        ms = sorted(v * 1000 for v in values)
        p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
        print(
            f"CR created -> {key:<8} n={len(ms)} median={statistics.median(ms):.1f} ms  "
            f"p95={p95:.1f} ms  min={ms[0]:.1f} ms  max={ms[-1]:.1f} ms"
        )


if __name__ == "__main__":
    main()
