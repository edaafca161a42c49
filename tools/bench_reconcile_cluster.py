"""Benchmark: asr-operator on the real control plane (tools/cluster), N ASRDeployments created at once.

    .venv/bin/python tools/bench_reconcile_cluster.py --count 200

A local control plane (kube-apiserver, controllers, scheduler, etcd, kwok nodes) is started from the cached binaries
of tools/cluster/build.sh, the chart installed, and the operator run as a process with the chart's ServiceAccount
token (as in tests/cluster). N copies of examples/demo-cpu.yaml are then created concurrently (32 client threads),
and watches record, per CR, the time from its create call to
- children: its ConfigMap, Deployment and Service all exist;
- Ready: its status says Ready=True for generation 1 (its pod scheduled by the real scheduler, Ready on a kwok
  node, counted by the Deployment controller, and the operator's status written).
It reports p50/p95/max of both, how many were Ready within 30 s, the operator's peak RSS (VmHWM), and the
operator's API calls per CR (from the API server's audit log). A benchmark, not a test: no pass/fail.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kubernetes
import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "cluster"))
from localkube import Kube, OperatorProcess, load_cluster_module  # noqa: E402

NS = "bench"
RELEASE, PLATFORM_NS = "asr-platform", "asr-system"
OPERATOR_USER = f"system:serviceaccount:{PLATFORM_NS}:{RELEASE}"
GROUP, VERSION, PLURAL = "asr-platform.io", "v1alpha1", "asrdeployments"
CHILD_KINDS = ("configmaps", "deployments", "services")


class Timeline:
    """First-seen times, per CR name, of each child and of the Ready status (client clock, thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.created: dict[str, float] = {}
        self.children: dict[str, dict[str, float]] = {}
        self.ready: dict[str, float] = {}
        self.direct = False  # baseline: no operator, Ready = the Deployment has a ready replica

    def child(self, kind: str, owner: str) -> None:
        with self.lock:
            self.children.setdefault(owner, {}).setdefault(kind, time.monotonic())

    def mark_ready(self, name: str) -> None:
        with self.lock:
            self.ready.setdefault(name, time.monotonic())


def _watch_children(api: kubernetes.client.ApiClient, kind: str, timeline: Timeline, stop: threading.Event) -> None:
    core, apps = kubernetes.client.CoreV1Api(api), kubernetes.client.AppsV1Api(api)
    lister = {"configmaps": core.list_namespaced_config_map, "services": core.list_namespaced_service,
              "deployments": apps.list_namespaced_deployment}[kind]  # fmt: skip
    while not stop.is_set():
        w = kubernetes.watch.Watch()
        for event in w.stream(lister, NS, label_selector="app.kubernetes.io/managed-by=asr-operator",
                              timeout_seconds=5):  # fmt: skip
            obj = event["object"]
            owner = (obj.metadata.labels or {}).get("app.kubernetes.io/instance")
            if owner and event["type"] in ("ADDED", "MODIFIED"):
                timeline.child(kind, owner)
                if kind == "deployments" and timeline.direct and (obj.status.ready_replicas or 0) >= 1:
                    timeline.mark_ready(owner)
            if stop.is_set():
                w.stop()


def _is_ready(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    ready = conditions.get("Ready") or {}
    return ready.get("status") == "True" and status.get("observedGeneration") == 1


def _watch_ready(api: kubernetes.client.ApiClient, timeline: Timeline, stop: threading.Event) -> None:
    custom = kubernetes.client.CustomObjectsApi(api)
    while not stop.is_set():
        w = kubernetes.watch.Watch()
        for event in w.stream(custom.list_namespaced_custom_object, GROUP, VERSION, NS, PLURAL, timeout_seconds=5):
            if _is_ready(event["object"]):
                timeline.mark_ready(event["object"]["metadata"]["name"])
            if stop.is_set():
                w.stop()


def _add_bench_nodes(kube: Kube, count: int) -> None:
    """kwok nodes with room for `count` pods (the cluster's own CPU node takes 110 pods, 8 CPUs)."""
    for i in range(max(1, count // 100 + 1)):
        capacity = {"cpu": "1k", "memory": "4Ti", "pods": "110"}
        kube.apply({"apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": f"kwok-bench-{i}", "annotations": {"kwok.x-k8s.io/node": "fake"},
                                 "labels": {"kubernetes.io/os": "linux", "type": "kwok"}},
                    "status": {"capacity": capacity, "allocatable": capacity}})  # fmt: skip
    kube.kubectl("wait", "--for=condition=Ready", "node", "--all", "--timeout=60s")


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"n": len(values), "p50": round(statistics.median(ordered), 3), "p95": round(p95, 3),
            "max": round(ordered[-1], 3)}  # fmt: skip


def _rss_kb(pid: int) -> dict[str, int]:
    fields = {}
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def _create_directly(api: kubernetes.client.ApiClient, body: dict[str, Any]) -> None:
    """The baseline: the children the operator would build for `body`, created by the client itself."""
    from asr_operator.builders import ASR
    from asr_operator.children import desired_children
    from asr_operator.kube import KINDS
    from asr_operator.kube import Kube as OperatorKube
    from asr_operator.spec import parse_spec

    asr = ASR(body["metadata"]["name"], NS, parse_spec(body["spec"]))
    present, _ = desired_children(asr)
    for obj in present:
        OperatorKube(api).create(KINDS[obj["kind"]], NS, obj)


def run(count: int, timeout_s: float, workdir: pathlib.Path, direct: bool = False) -> dict[str, Any]:
    module = load_cluster_module()
    cluster = module.Cluster(workdir / "k8s")
    cluster.up()
    operator: OperatorProcess | None = None
    try:
        kube = Kube(cluster.bin, cluster.kubeconfig, cluster.audit_log)
        kube.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        kube.helm("install", RELEASE, str(REPO / "charts" / "asr-platform"), "-n", PLATFORM_NS, "--create-namespace",
                  "--wait", "--timeout=2m")  # fmt: skip
        kube.kubectl("create", "namespace", NS)
        _add_bench_nodes(kube, count)
        if not direct:
            token_config = kube.token_kubeconfig(workdir / "operator.kubeconfig", RELEASE, PLATFORM_NS)
            operator = OperatorProcess(token_config, workdir / "operator.log", {"POD_ID": "bench"}).start()

        api = kubernetes.config.new_client_from_config(config_file=str(cluster.kubeconfig))
        timeline, stop = Timeline(), threading.Event()
        timeline.direct = direct
        watchers = [threading.Thread(target=_watch_children, args=(api, k, timeline, stop), daemon=True)
                    for k in CHILD_KINDS]  # fmt: skip
        watchers.append(threading.Thread(target=_watch_ready, args=(api, timeline, stop), daemon=True))
        for t in watchers:
            t.start()
        time.sleep(3)  # the operator's initial listing and the watches are up before the burst

        example = yaml.safe_load((REPO / "examples" / "demo-cpu.yaml").read_text())
        custom = kubernetes.client.CustomObjectsApi(api)
        since = time.time()

        def create(i: int) -> None:
            body = {**example, "metadata": {"name": f"asr-{i:03d}", "namespace": NS}}
            start = time.monotonic()
            if direct:
                _create_directly(api, body)
            else:
                custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)
            with timeline.lock:
                timeline.created[body["metadata"]["name"]] = start

        burst = time.monotonic()
        with ThreadPoolExecutor(32) as pool:
            list(pool.map(create, range(count)))
        created_s = time.monotonic() - burst
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and len(timeline.ready) < count:
            time.sleep(0.5)
        stop.set()
        late = {}
        for obj in custom.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)["items"]:
            if obj["metadata"]["name"] not in timeline.ready and len(late) < 5:
                st = obj.get("status") or {}
                conditions = [(c["type"], c["status"], c.get("reason")) for c in st.get("conditions") or []]
                name = obj["metadata"]["name"]
                late[name] = {"observedGeneration": st.get("observedGeneration"), "conditions": conditions}
        rss = _rss_kb(operator.proc.pid) if operator is not None and operator.proc else {}
        calls = [ev for ev in kube.audit_events(since) if ev["user"]["username"] == OPERATOR_USER]
        verbs: dict[str, int] = {}
        for ev in calls:
            verbs[ev["verb"]] = verbs.get(ev["verb"], 0) + 1

        children = [max(t.values()) - timeline.created[n] for n, t in timeline.children.items()
                    if len(t) == len(CHILD_KINDS) and n in timeline.created]  # fmt: skip
        ready = [t - timeline.created[n] for n, t in timeline.ready.items() if n in timeline.created]
        return {
            "mode": "direct (no operator: the same children created by the client)" if direct else "operator",
            "controller_qps": os.environ.get("ASR_CLUSTER_CONTROLLER_QPS") or "20 (upstream default)",
            "count": count,
            "create_burst_s": round(created_s, 2),
            "children_s": _percentiles(children),
            "ready_s": _percentiles(ready),
            "ready_within_30s": sum(1 for r in ready if r <= 30),
            "operator_rss_mib": {k: round(v / 1024, 1) for k, v in rss.items()},
            "operator_api_calls_per_cr": round(len(calls) / count, 1),
            "operator_api_calls_by_verb": verbs,
            "not_ready_examples": late,
        }
    finally:
        if operator is not None:
            operator.stop()
        cluster.down()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for every CR to be Ready")
    parser.add_argument(
        "--baseline", action="store_true", help="also run without the operator: the children created directly"
    )
    parser.add_argument(
        "--tuned-controllers", type=int, default=0, metavar="QPS",
        help="raise kube-controller-manager's client rate limit to QPS (upstream default 20) and its sync workers",
    )  # fmt: skip
    args = parser.parse_args()
    if args.tuned_controllers:
        os.environ["ASR_CLUSTER_CONTROLLER_QPS"] = str(args.tuned_controllers)
    for direct in (False, True) if args.baseline else (False,):
        with tempfile.TemporaryDirectory(prefix="bench-reconcile-") as tmp:
            result = run(args.count, args.timeout, pathlib.Path(tmp), direct=direct)
        print(json.dumps(result, indent=2), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
