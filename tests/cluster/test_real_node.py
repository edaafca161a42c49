"""The real node of tools/cluster (realnode.py): containerd + runc + CNI, kubelet and kube-proxy beside kwok's fake
nodes. It changes the machine (iptables, routes, a bridge, sysctls, mounts), so it runs only as root where that is
allowed: under CI or with ASR_E2E_REAL_NODE=1 (elsewhere it skips and says so).

Checked: the network is fenced before any pod exists; a pod of the operator image, pulled from the loopback
registry (AlwaysPullImages on), becomes Ready on the real node and answers through its Service's ClusterIP from the
host; `kubectl logs/exec` reach the kubelet by its InternalIP; the pod's resolv.conf names only its own loopback;
a connection from the pod to an outside address is dropped here (the guard's counter moves); and `down()` leaves
the host as it found it: iptables rules of both families, links, routes, mounts, sysctls, cgroups, processes.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from containers import current_image
from localkube import load_cluster_module

SYSCTLS = ("vm.overcommit_memory", "kernel.panic", "kernel.panic_on_oops", "net.ipv4.ip_forward")
PROCESS_NAMES = ("containerd", "containerd-shim-runc-v2", "kubelet", "kube-proxy", "docker-registry", "pause")


def _may_change_this_machine() -> str | None:
    if os.geteuid() != 0:
        return "the real node needs root"
    if not (os.environ.get("CI") or os.environ.get("ASR_E2E_REAL_NODE") == "1"):
        return "the real node changes this machine (iptables, routes, mounts): set ASR_E2E_REAL_NODE=1 to allow it"
    return None


def host_state() -> dict[str, Any]:
    """What a real node may change, in a form that compares equal when the host is back as it was."""
    rules = {}
    for tool in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle", "raw"):
            out = subprocess.run([tool, "-t", table, "-S"], capture_output=True, text=True).stdout
            rules[f"{tool}/{table}"] = sorted(out.splitlines())
    procs = []
    for comm in pathlib.Path("/proc").glob("[0-9]*/comm"):
        try:
            name = comm.read_text().strip()
        except OSError:
            continue
        if name in PROCESS_NAMES:
            procs.append(name)
    mounts = sorted(line.split()[1] for line in pathlib.Path("/proc/self/mounts").read_text().splitlines())
    return {
        "rules": rules,
        "links": sorted(re.findall(r"^\d+: ([^:@]+)", subprocess.run(["ip", "-o", "link"], capture_output=True,
                                                                       text=True).stdout, flags=re.M)),
        "routes": sorted(subprocess.run(["ip", "route", "show", "table", "all"], capture_output=True,
                                        text=True).stdout.splitlines()),
        "mounts": mounts,
        "sysctls": {s: pathlib.Path("/proc/sys", *s.split(".")).read_text().strip() for s in SYSCTLS},
        "cgroups": sorted(str(p) for p in pathlib.Path("/sys/fs/cgroup").glob("*/kubepods*")),
        "processes": sorted(procs),
        "netns": sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else [],
    }  # fmt: skip


@pytest.fixture(scope="module")
def real_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, dict[str, Any]]]:
    reason = _may_change_this_machine()
    if reason:
        pytest.skip(reason)  # not skip_unless_ci: under CI the reason above is never met
    module = load_cluster_module()
    missing = module.missing_binaries(module.default_bin_dir(), real_node=True)
    if missing:
        pytest.fail(f"{', '.join(missing)} not built: run tools/cluster/build.sh")
    before = host_state()
    cluster = module.Cluster(tmp_path_factory.mktemp("k8s-real"), real_node=True)
    try:
        cluster.up(timeout_s=180)
        yield cluster, before
    finally:
        cluster.down()
    after = host_state()
    assert after == before, {k: (before[k], after[k]) for k in before if before[k] != after[k]}


def _kubectl_json(cluster: Any, *args: str) -> Any:
    return json.loads(cluster.kubectl(*args, "-o", "json").stdout)


def _guard_drops() -> int:
    out = subprocess.run(["iptables", "-t", "mangle", "-L", "ASR-NODE-GUARD", "-v", "-n", "-x"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return sum(int(line.split()[0]) for line in out.splitlines() if " DROP " in f" {line} ")


def test_fenced_before_any_pod_then_a_pod_serves_through_its_service(real_cluster: tuple[Any, dict[str, Any]]) -> None:
    cluster, _ = real_cluster
    node = cluster.node()
    pods = _kubectl_json(cluster, "get", "pods", "-A", "--field-selector=spec.nodeName=asr-node-0")["items"]
    assert not pods, "a pod on the real node before the checks"
    assert node.guard_problems() == []
    nodes = {n["metadata"]["name"]: n for n in _kubectl_json(cluster, "get", "nodes")["items"]}
    real = nodes["asr-node-0"]
    assert [a for a in real["status"]["addresses"] if a["type"] == "InternalIP"] == [
        {"type": "InternalIP", "address": "10.99.0.1"}
    ]
    assert "kwok.x-k8s.io/node" not in real["metadata"].get("annotations", {})  # kwok leaves it alone

    image = node.push(current_image("asr-operator"), "asr-operator:test")
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": "asr-node-0"}, "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "web", "image": image, "command": ["python", "-m", "http.server", "8080"],
                "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
                "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}},
            }],
        },
    }  # fmt: skip
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
               "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}  # fmt: skip
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [pod, service]}))
    cluster.kubectl("wait", "--for=condition=Ready", "pod/web", "--timeout=120s")
    cluster_ip = _kubectl_json(cluster, "get", "service", "web")["spec"]["clusterIP"]
    deadline = time.monotonic() + 30  # kube-proxy programs the rule shortly after the endpoint turns ready
    while True:
        try:
            with urllib.request.urlopen(f"http://{cluster_ip}/", timeout=3) as r:
                assert r.status == 200
                break
        except OSError:
            assert time.monotonic() < deadline, f"no answer from {cluster_ip} through kube-proxy"
            time.sleep(0.5)
    assert "GET / HTTP/1.1" in cluster.kubectl("logs", "web").stdout  # API server -> kubelet by InternalIP
    resolv = cluster.kubectl("exec", "web", "--", "cat", "/etc/resolv.conf").stdout
    assert re.findall(r"^nameserver (\S+)", resolv, flags=re.M) == ["127.0.0.1"], resolv

    drops = _guard_drops()
    probe = "import socket\ntry:\n socket.create_connection(('203.0.113.7', 80), timeout=2)\n print('CONNECTED')\n" \
            "except OSError as e:\n print('refused', type(e).__name__)"  # fmt: skip
    out = cluster.kubectl("exec", "web", "--", "python", "-c", probe).stdout
    assert "refused" in out and "CONNECTED" not in out, out
    assert _guard_drops() > drops, "the pod's packet to an outside address was not dropped by the guard"
