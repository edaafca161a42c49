#!/usr/bin/env python3
"""A local Kubernetes control plane from the cached binaries of tools/cluster/build.sh, started by hand.

    tools/cluster/cluster.py up   [--dir .cluster] [--bin DIR]   # seconds; writes <dir>/kubeconfig
    tools/cluster/cluster.py down [--dir .cluster]

etcd, kube-apiserver (RBAC + Node authorization, hardened admission incl. OwnerReferencesPermissionEnforcement,
an audit log), kube-controller-manager (every default controller, one ServiceAccount per controller),
kube-scheduler and kwok (fake kubelets: scheduled pods become Running/Ready) run as local processes on loopback
ports; pid files and logs stay in <dir>. Three fake nodes: two GPU nodes and one CPU node. The upstream CRDs
fetched by build.sh (KEDA, prometheus-operator) are installed. Nothing is downloaded here. Stdlib only, so the
tests can import it.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from pki import FRONT_PROXY_CLIENT, ensure_pki

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
SERVICE_CIDR = "10.96.0.0/16"
NODE_IP = "10.99.0.1"  # the real node's address (realnode.py), where the API server listens when it runs
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
# The real node's processes (realnode.py), started after the control plane and stopped before it.
NODE_COMPONENTS = ("docker-registry", "containerd", "kubelet", "kube-proxy")
REAL_NODE_BINARIES = ["kubelet", "kube-proxy", "pause"]
# autoscalers.py's processes (Prometheus, KEDA, prometheus-adapter), stopped first.
AUTOSCALING_COMPONENTS = (
    "pod-discovery", "prometheus", "keda-operator", "keda-metrics-apiserver", "keda-admission-webhooks",
    "prometheus-adapter", "service-hosts", "keda-http-interceptor", "keda-http-scaler",
)  # fmt: skip
# Admission plugins on top of the defaults (NamespaceLifecycle, ServiceAccount, PodSecurity, ResourceQuota, ...):
# what hardened distributions (OpenShift, CIS benchmark) turn on. OwnerReferencesPermissionEnforcement makes
# blockOwnerDeletion need `update` on the owner's finalizers subresource.
EXTRA_ADMISSION = "NodeRestriction,OwnerReferencesPermissionEnforcement,AlwaysPullImages,DenyServiceExternalIPs"
AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  # The controllers' own reads are noise; their writes stay (garbage collection, scaling) via the rule below.
  - level: None
    userGroups: ["system:serviceaccounts:kube-system", "system:nodes"]
    verbs: [get, list, watch]
  # Every call of any other ServiceAccount (the operator): what it read and wrote; RBAC denials show as 403.
  - level: Metadata
    userGroups: ["system:serviceaccounts"]
  # Writes of everyone else (admins, helm, controllers) at Metadata level: who changed what.
  - level: Metadata
    verbs: [create, update, patch, delete, deletecollection]
  - level: None
"""
# Pod Security: baseline enforced cluster-wide (a namespace may tighten it), restricted reported as warnings.
ADMISSION_CONFIG = """apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
  - name: PodSecurity
    configuration:
      apiVersion: pod-security.admission.config.k8s.io/v1
      kind: PodSecurityConfiguration
      defaults: {enforce: baseline, enforce-version: latest, warn: restricted, warn-version: latest,
                 audit: restricted, audit-version: latest}
      exemptions: {usernames: [], runtimeClasses: [], namespaces: [kube-system]}
"""
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


def k8s_version() -> str:
    for line in (HERE / "kubernetes" / "go.mod").read_text().splitlines():
        if line.startswith("require k8s.io/kubernetes "):
            return line.split()[-1]
    raise RuntimeError("tools/cluster/kubernetes/go.mod pins no k8s.io/kubernetes version")


def default_bin_dir() -> pathlib.Path:
    cache = os.environ.get("ASR_CLUSTER_CACHE") or os.path.expanduser("~/.cache/asr-platform/cluster")
    return pathlib.Path(cache) / k8s_version() / "bin"


def missing_binaries(bin_dir: pathlib.Path, real_node: bool = False) -> list[str]:
    names = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "kubectl", "helm"]
    names += REAL_NODE_BINARIES if real_node else []
    return [n for n in names if not os.access(bin_dir / n, os.X_OK)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_kubeconfig(path: pathlib.Path, server: str, pki: pathlib.Path, user: str) -> pathlib.Path:
    """A kubeconfig with inline paths to the CA and one client certificate (JSON is valid YAML)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "asr-local", "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt")}}
        ],
        "users": [
            {
                "name": user,
                "user": {"client-certificate": str(pki / f"{user}.crt"), "client-key": str(pki / f"{user}.key")},
            }
        ],
        "contexts": [{"name": "asr-local", "context": {"cluster": "asr-local", "user": user}}],
        "current-context": "asr-local",
    }
    path.write_text(json.dumps(config, indent=2) + "\n")
    path.chmod(0o600)
    return path


class Cluster:
    """One control plane whose state (pids, logs, certificates, etcd data, kubeconfigs) lives in `state_dir`."""

    def __init__(
        self,
        state_dir: pathlib.Path,
        bin_dir: pathlib.Path | None = None,
        real_node: bool = False,
        autoscaling: bool = False,
    ) -> None:
        self.dir = state_dir.resolve()
        self.bin = (bin_dir or default_bin_dir()).resolve()
        self.pki = self.dir / "pki"
        self.kubeconfig = self.dir / "kubeconfig"
        self.audit_log = self.dir / "audit.log"
        self.logs = self.dir / "logs"
        self.real_node = real_node
        self.autoscaling = autoscaling
        self.node_ip = "127.0.0.1"

    def node(self) -> Any:
        """The real node's host side (realnode.py; imported only when a real node is involved)."""
        from realnode import RealNode

        return RealNode(self.dir, self.bin, self.pki)

    def autoscalers(self) -> Any:
        """Prometheus, KEDA and prometheus-adapter (autoscalers.py; imported only when they are involved)."""
        from autoscalers import Autoscalers

        return Autoscalers(self)

    # --- processes -----------------------------------------------------------------------------------------
    def _spawn(self, name: str, args: list[str], exe: str | None = None, env: dict[str, str] | None = None) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"{name}.log", "ab") as log:
            # Own session: `make cluster` returns while the control plane keeps running; down() signals by pid.
            proc = subprocess.Popen(
                [exe or str(self.bin / name), *args],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, **(env or {})},
            )  # fmt: skip
        (self.dir / f"{name}.pid").write_text(f"{proc.pid}\n")

    def _stop(self, names: tuple[str, ...]) -> None:
        for name in names:
            pid_file = self.dir / f"{name}.pid"
            if pid_file.exists():
                _terminate(int(pid_file.read_text()))
                pid_file.unlink()

    def running(self) -> bool:
        pid_file = self.dir / "kube-apiserver.pid"
        if not pid_file.exists():
            return False
        try:
            os.kill(int(pid_file.read_text()), 0)
        except (ProcessLookupError, ValueError):
            return False
        return True

    def down(self) -> None:
        """Stop every component (the real node's pods and processes first, then apiserver clients, etcd last),
        delete the cluster's data, and put back what the real node changed on the host."""
        self._stop(AUTOSCALING_COMPONENTS)
        if (self.dir / "autoscaling").exists():
            self.autoscalers().forget()
        node = self.node() if (self.dir / "node").exists() else None
        if node is not None:
            if self.running():
                node.drain(self.kubectl)
            self._stop(("kube-proxy", "kubelet"))
            node.force_stop_tasks()
            self._stop(("containerd", "docker-registry"))
        self._stop(tuple(reversed(COMPONENTS)))
        if node is not None:
            node.restore_host()
            shutil.rmtree(node.dir, ignore_errors=True)
        shutil.rmtree(self.dir / "etcd-data", ignore_errors=True)

    # --- start ---------------------------------------------------------------------------------------------
    def up(self, timeout_s: float = 120.0) -> Cluster:
        missing = missing_binaries(self.bin, self.real_node)
        if missing:
            raise RuntimeError(f"missing binaries in {self.bin}: {', '.join(missing)} (run tools/cluster/build.sh)")
        if self.running():
            return self
        if self.real_node and os.geteuid() != 0:
            raise RuntimeError("a real node needs root (containerd, the kubelet, iptables)")
        if self.autoscaling and not self.real_node:
            raise RuntimeError("--autoscaling needs --real-node (the metrics servers listen on its address)")
        self.down()  # leftovers of a crashed run: stale pids, old etcd data, a real node's host changes
        self.dir.mkdir(parents=True, exist_ok=True)
        ensure_pki(self.pki)
        deadline = time.monotonic() + timeout_s
        node = self.node() if self.real_node else None
        if node is not None:  # fenced before anything listens on the node's address
            node.record_host()
            node.fence_network()
            self.node_ip = NODE_IP
        etcd_url = self._start_etcd()
        server = self._start_apiserver(etcd_url)
        self._wait_ready(server, deadline)
        self._start_controllers(server)
        self.kubectl("apply", "-f", "-", input=self._nodes_yaml())
        self._install_upstream_crds()
        if node is not None:
            node.start(self._spawn, server)
        self._wait_for(deadline, f"{self._node_count()} Ready nodes", self._nodes_ready)
        self._wait_for(deadline, "the default ServiceAccount", self._default_sa_exists)
        if self.autoscaling:
            self.autoscalers().start(self._spawn, server, deadline)
        return self

    def _node_count(self) -> int:
        return 4 if self.real_node else 3

    def _start_etcd(self) -> str:
        client, peer = free_port(), free_port()
        self._spawn(
            "etcd",
            [
                "--name=local", f"--data-dir={self.dir / 'etcd-data'}",
                f"--listen-client-urls=http://127.0.0.1:{client}", f"--advertise-client-urls=http://127.0.0.1:{client}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}", f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=local=http://127.0.0.1:{peer}",
                # A throw-away test store: no fsync (seconds saved on every write burst), no metrics port.
                "--unsafe-no-fsync", "--log-level=warn",
            ],
        )  # fmt: skip
        return f"http://127.0.0.1:{client}"

    def _start_apiserver(self, etcd_url: str) -> str:
        port, pki = free_port(), self.pki
        (self.dir / "audit-policy.yaml").write_text(AUDIT_POLICY)
        (self.dir / "admission.yaml").write_text(ADMISSION_CONFIG)
        self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers={etcd_url}", f"--bind-address={self.node_ip}", f"--advertise-address={self.node_ip}",
                f"--secure-port={port}", f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--service-account-key-file={pki / 'sa.pub'}", f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--authorization-mode=Node,RBAC", "--anonymous-auth=false", "--profiling=false",
                f"--enable-admission-plugins={EXTRA_ADMISSION}",
                f"--admission-control-config-file={self.dir / 'admission.yaml'}",
                f"--audit-policy-file={self.dir / 'audit-policy.yaml'}", f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json", "--audit-log-mode=blocking",
                "--enable-priority-and-fairness=true", "--v=1",
                # kubelets by their InternalIP (a node name would be looked up in the host's DNS), over verified TLS
                "--kubelet-preferred-address-types=InternalIP",
                f"--kubelet-certificate-authority={pki / 'ca.crt'}",
                f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
                # The aggregation layer (KEDA's and prometheus-adapter's metrics APIs, autoscalers.py): proxied
                # with the front-proxy client certificate, straight to the APIService's endpoint address.
                f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
                f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}", "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group", "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={pki / (FRONT_PROXY_CLIENT + '.crt')}",
                f"--proxy-client-key-file={pki / (FRONT_PROXY_CLIENT + '.key')}", "--enable-aggregator-routing=true",
            ],
        )  # fmt: skip
        server = f"https://{self.node_ip}:{port}"
        for user in ("admin", "controller-manager", "scheduler", "kwok"):
            write_kubeconfig(self.dir / f"{user}.kubeconfig", server, self.pki, user)
        self.kubeconfig.write_text((self.dir / "admin.kubeconfig").read_text())
        self.kubeconfig.chmod(0o600)
        return server

    @staticmethod
    def _controller_rate_flags() -> list[str]:
        """$ASR_CLUSTER_CONTROLLER_QPS: the controllers' client rate limit (upstream default 20/s, burst 30), raised
        as large clusters do; tools/bench_reconcile_cluster.py --tuned-controllers measures with it."""
        qps = os.environ.get("ASR_CLUSTER_CONTROLLER_QPS")
        if not qps:
            return []
        return [f"--kube-api-qps={qps}", f"--kube-api-burst={2 * int(qps)}",
                "--concurrent-deployment-syncs=20", "--concurrent-replicaset-syncs=20"]  # fmt: skip

    def _start_controllers(self, server: str) -> None:
        pki = self.pki
        self._spawn(
            "kube-controller-manager",
            [
                f"--kubeconfig={self.dir / 'controller-manager.kubeconfig'}", "--secure-port=0", "--leader-elect=false",
                "--use-service-account-credentials=true", "--controllers=*",
                f"--service-account-private-key-file={pki / 'sa.key'}", f"--root-ca-file={pki / 'ca.crt'}",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}", f"--cluster-signing-key-file={pki / 'ca.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # Fast HPA and GC: tests wait on them; the defaults (15 s, 20 s) would only make waits longer.
                "--horizontal-pod-autoscaler-sync-period=5s", "--v=1",
                *self._controller_rate_flags(),
            ],
        )  # fmt: skip
        self._spawn(
            "kube-scheduler",
            [f"--kubeconfig={self.dir / 'scheduler.kubeconfig'}", "--secure-port=0", "--leader-elect=false", "--v=1"],
        )
        self._spawn(
            "kwok",
            [
                f"--kubeconfig={self.dir / 'kwok.kubeconfig'}", f"--config={HERE / 'kwok-stages.yaml'}",
                # only the fake nodes: a real node's kubelet reports for itself
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--node-lease-duration-seconds=40", "--cidr=10.244.0.0/16",
                "--node-ip=127.0.0.1",
            ],
        )  # fmt: skip

    # --- checks and helpers --------------------------------------------------------------------------------
    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            input=input, capture_output=True, text=True, check=check, timeout=120,
        )  # fmt: skip

    def _wait_ready(self, server: str, deadline: float) -> None:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"{server}/readyz", context=ctx, timeout=5) as resp:
                    return bool(resp.status == 200)
            except OSError:
                return False

        self._wait_for(deadline, "kube-apiserver /readyz", ready)

    def _wait_for(self, deadline: float, what: str, check: object) -> None:
        assert callable(check)
        while not check():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}; logs in {self.logs}")
            for name in COMPONENTS + NODE_COMPONENTS + AUTOSCALING_COMPONENTS:
                pid_file = self.dir / f"{name}.pid"
                if pid_file.exists() and not _alive(int(pid_file.read_text())):
                    tail = (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"{name} exited while waiting for {what}:\n{tail}")
            time.sleep(0.25)

    def _nodes_ready(self) -> bool:
        out = self.kubectl("get", "nodes", "-o", "json", check=False)
        if out.returncode:
            return False
        nodes = json.loads(out.stdout)["items"]
        ready = [
            n
            for n in nodes
            for c in n.get("status", {}).get("conditions", [])
            if c["type"] == "Ready" and c["status"] == "True"
        ]
        return len(ready) == self._node_count()

    def _default_sa_exists(self) -> bool:
        return self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False).returncode == 0

    def _nodes_yaml(self) -> str:
        nodes = [_node("kwok-gpu-0", gpus=2), _node("kwok-gpu-1", gpus=2), _node("kwok-cpu-0", gpus=0)]
        return json.dumps({"apiVersion": "v1", "kind": "List", "items": nodes})

    def _install_upstream_crds(self) -> None:
        crd_dir = self.bin.parent / "crds"
        files = sorted(crd_dir.glob("*.yaml")) if crd_dir.is_dir() else []
        if not files:
            raise RuntimeError(f"no upstream CRDs in {crd_dir} (run tools/cluster/build.sh)")
        for f in files:
            # Server-side apply: KEDA's ScaledObject CRD is larger than client-side apply's annotation limit.
            self.kubectl("apply", "--server-side", "-f", str(f))
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")


def _node(name: str, gpus: int) -> dict[str, object]:
    """A fake node kwok manages: capacity as the tests need it, GPU nodes labelled and tainted like the NVIDIA stack."""
    capacity = {"cpu": "16", "memory": "64Gi", "pods": "110"} if gpus else {"cpu": "8", "memory": "32Gi", "pods": "110"}
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
    }
    spec: dict[str, object] = {}
    if gpus:
        capacity["nvidia.com/gpu"] = str(gpus)
        labels["nvidia.com/gpu.present"] = "true"
        spec["taints"] = [GPU_TAINT]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels, "annotations": {"kwok.x-k8s.io/node": "fake"}},
        "spec": spec,
        "status": {"capacity": capacity, "allocatable": capacity},
    }


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _terminate(pid: int, grace_s: float = 10.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    end = time.monotonic() + grace_s
    while time.monotonic() < end and _alive(pid):
        time.sleep(0.1)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--dir", type=pathlib.Path, default=REPO / ".cluster", help="state directory")
    parser.add_argument("--bin", type=pathlib.Path, default=None, help="binaries (default: build.sh's cache)")
    parser.add_argument(
        "--real-node",
        action="store_true",
        default=bool(os.environ.get("REAL_NODE")),
        help="also run a real node (containerd + kubelet + kube-proxy; root; see realnode.py); env REAL_NODE=1",
    )
    parser.add_argument(
        "--autoscaling",
        action="store_true",
        default=bool(os.environ.get("AUTOSCALING")),
        help="also run Prometheus, KEDA and prometheus-adapter (needs --real-node; autoscalers.py); env AUTOSCALING=1",
    )
    args = parser.parse_args(argv)
    cluster = Cluster(args.dir, args.bin, real_node=args.real_node, autoscaling=args.autoscaling)
    if args.command == "down":
        cluster.down()
        print(f"cluster in {cluster.dir} stopped")
        return 0
    start = time.monotonic()
    cluster.up()
    print(f"cluster up in {time.monotonic() - start:.1f} s: export KUBECONFIG={cluster.kubeconfig}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
