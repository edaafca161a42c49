"""A real node beside kwok's fake ones: Debian's containerd + runc + CNI plugins, kubelet + kube-proxy from
build.sh, a pause image built here, and a registry on loopback (Debian's docker-registry) so the hardened admission
(AlwaysPullImages) stays on. Root only. Used by cluster.py (`up --real-node`, `make cluster REAL_NODE=1`).

No packet may leave the machine, so the network is fenced before any pod starts (`guard_problems()` checks it):
  - the node's address is its pod bridge (asr-br0, 10.99.0.1/24); the API server listens there (pods reach it
    through the `kubernetes` Service) and reaches the kubelet by that InternalIP, never by a name lookup;
  - forwarding from the pod bridge to anything but the bridge is dropped (mangle FORWARD, ahead of every filter
    rule kube-proxy or the kubelet add; IPv4 and IPv6); pods reach the host itself (the API server) and each other;
  - kwok's fake pod addresses are blackholed, and the service range is routed into the bridge: a ClusterIP without a
    kube-proxy rule dies there instead of following the default route out;
  - pods get a resolv.conf naming only their own loopback (kubelet `resolvConf`), so no lookup leaves.
`down()` puts the machine back as `up()` found it: processes (shims too), mounts, network namespaces, the bridge and
routes, iptables (both families, restored from the saved tables), the sysctls the kubelet and CNI change, cgroups.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable

from cluster import NODE_IP, SERVICE_CIDR, free_port, write_kubeconfig

NODE_NAME = "asr-node-0"
POD_CIDR = "10.99.0.0/24"
BRIDGE = "asr-br0"
FAKE_POD_CIDR = "10.244.0.0/16"  # kwok --cidr
GUARD_CHAIN = "ASR-NODE-GUARD"
PAUSE_TAG = "asr-pause:1"  # the local image (buildah)
PAUSE_NAME = "pause:asr"  # its name in the loopback registry: containerd's sandbox image
# What glibc assumes for an empty resolv.conf, said explicitly: containerd copies the host's file when the kubelet
# hands it no DNS server at all, so an empty file is not enough. A lookup asks the pod's own loopback and fails there.
POD_RESOLV_CONF = "nameserver 127.0.0.1\noptions attempts:1 timeout:1\n"
# What the kubelet (kernel defaults it insists on), CNI (forwarding) and kube-proxy may change.
SYSCTLS = (
    "vm.overcommit_memory", "vm.panic_on_oom", "kernel.panic", "kernel.panic_on_oops", "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes", "net.ipv4.ip_forward", "net.ipv4.conf.all.route_localnet",
    "net.ipv6.conf.all.forwarding", "net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables",
    "net.netfilter.nf_conntrack_max",
)  # fmt: skip
# Host paths the kubelet and CNI use whatever their root dirs say: removed on down() when up() created them.
HOST_PATHS = (
    "/var/log/containers", "/var/log/pods", "/var/lib/cni", "/run/netns", "/var/lib/kubelet", "/run/containerd",
)  # fmt: skip
CGROUP_ROOT = pathlib.Path("/sys/fs/cgroup")
# Where earlier versions kept the registry across runs: every e2e run pushed a new multi-GB inference image there and
# nothing ever deleted one (15 GB after five runs filled CI's disk). Removed when a node starts.
OLD_REGISTRY_CACHE = pathlib.Path(os.path.expanduser("~/.cache/asr-platform/registry"))


def sh(*argv: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True, input=input, timeout=300)


def _sysctl_path(name: str) -> pathlib.Path:
    return pathlib.Path("/proc/sys") / name.replace(".", "/")


class RealNode:
    """The node's processes and host changes; its state (pids, configs, saved host state) lives in `dir`."""

    def __init__(self, state_dir: pathlib.Path, bin_dir: pathlib.Path, pki: pathlib.Path) -> None:
        self.dir = state_dir / "node"
        self.bin = bin_dir
        self.pki = pki
        # sockets live under /run: a unix socket path must stay under 108 bytes, a pytest tmp dir may not
        self.run_dir = pathlib.Path("/run") / f"asr-node-{hashlib.sha256(bytes(self.dir)).hexdigest()[:10]}"
        self.saved = self.dir / "host-state.json"
        self.containerd_sock = self.run_dir / "containerd.sock"

    # --- host state ------------------------------------------------------------------------------------------
    def record_host(self) -> None:
        """What down() restores. Written once: a second up() after a crash keeps the first, clean, record."""
        if self.saved.exists():
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        state = {
            "sysctls": {n: _sysctl_path(n).read_text().strip() for n in SYSCTLS if _sysctl_path(n).exists()},
            "iptables": sh("iptables-save").stdout,
            "ip6tables": sh("ip6tables-save").stdout,
            "paths": [p for p in HOST_PATHS if os.path.exists(p)],
            "netns": sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else [],
            "cgroups": [str(p) for p in CGROUP_ROOT.glob("*/kubepods*")],
        }
        self.saved.write_text(json.dumps(state, indent=1))

    def fence_network(self) -> None:
        """The bridge (the node's address), routes and forwarding guard: before the API server and any pod."""
        if sh("ip", "link", "show", BRIDGE, check=False).returncode:
            sh("ip", "link", "add", BRIDGE, "type", "bridge")
        sh("ip", "addr", "replace", f"{NODE_IP}/24", "dev", BRIDGE)
        sh("ip", "link", "set", BRIDGE, "up")
        sh("ip", "route", "replace", "blackhole", FAKE_POD_CIDR)
        sh("ip", "route", "replace", SERVICE_CIDR, "dev", BRIDGE)
        for tool in ("iptables", "ip6tables"):
            sh(tool, "-t", "mangle", "-N", GUARD_CHAIN, check=False)
            sh(tool, "-t", "mangle", "-F", GUARD_CHAIN)
            sh(tool, "-t", "mangle", "-A", GUARD_CHAIN, "-i", BRIDGE, "-o", BRIDGE, "-j", "RETURN")
            sh(tool, "-t", "mangle", "-A", GUARD_CHAIN, "-i", BRIDGE, "-j", "DROP")
            if sh(tool, "-t", "mangle", "-C", "FORWARD", "-j", GUARD_CHAIN, check=False).returncode:
                sh(tool, "-t", "mangle", "-I", "FORWARD", "1", "-j", GUARD_CHAIN)
        (self.dir / "resolv.conf").write_text(POD_RESOLV_CONF)

    def guard_problems(self) -> list[str]:
        """Every fence that is missing (empty when pods may start)."""
        problems = []
        routes = sh("ip", "route", "show", "table", "all").stdout
        if f"blackhole {FAKE_POD_CIDR}" not in routes:
            problems.append(f"kwok's fake pod range {FAKE_POD_CIDR} is not blackholed")
        if f"{SERVICE_CIDR} dev {BRIDGE}" not in routes:
            problems.append(f"the service range {SERVICE_CIDR} is not routed into {BRIDGE}")
        for tool in ("iptables", "ip6tables"):
            rules = sh(tool, "-t", "mangle", "-S").stdout.splitlines()
            forward = [r for r in rules if r.startswith("-A FORWARD")]
            if not forward or forward[0] != f"-A FORWARD -j {GUARD_CHAIN}":
                problems.append(f"{tool}: mangle FORWARD does not start with -j {GUARD_CHAIN}: {forward[:2]}")
            if f"-A {GUARD_CHAIN} -i {BRIDGE} -j DROP" not in rules:
                problems.append(f"{tool}: {GUARD_CHAIN} does not drop what leaves {BRIDGE}")
        resolv = self.dir / "resolv.conf"
        if not resolv.exists() or resolv.read_text() != POD_RESOLV_CONF:
            problems.append(f"{resolv} (the pods' resolv.conf) does not keep lookups in the pod")
        return problems

    # --- processes -------------------------------------------------------------------------------------------
    def start(self, spawn: Callable[[str, list[str], str | None], None], server: str) -> None:
        problems = self.guard_problems()
        if problems:
            raise RuntimeError("refusing to start the real node, the network is not fenced: " + "; ".join(problems))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._start_registry(spawn)
        self._start_containerd(spawn)
        self.push(self._pause_image(), PAUSE_NAME)
        self._write_configs(server)
        spawn("kubelet", self._kubelet_args(), None)
        spawn("kube-proxy", [f"--config={self.dir / 'kube-proxy.yaml'}", "--v=1"], None)

    @property
    def registry(self) -> str:
        """host:port of the loopback registry (from its config: any RealNode of this state dir knows it)."""
        return str(json.loads((self.dir / "registry.yaml").read_text())["http"]["addr"])

    def _start_registry(self, spawn: Callable[[str, list[str], str | None], None]) -> None:
        port = free_port()
        # The registry's storage is the node's: `down()` deletes it with the node's directory, so pushed images never
        # pile up between runs (a push costs a compression of the image; containerd pulls and unpacks it anyway).
        shutil.rmtree(OLD_REGISTRY_CACHE, ignore_errors=True)
        storage = self.dir / "registry"
        storage.mkdir(parents=True, exist_ok=True)
        config = self.dir / "registry.yaml"
        config.write_text(
            json.dumps(
                {
                    "version": 0.1,
                    "log": {"level": "warn"},
                    "storage": {"filesystem": {"rootdirectory": str(storage)}},
                    "http": {"addr": f"127.0.0.1:{port}"},
                }
            )
        )
        spawn("docker-registry", ["serve", str(config)], shutil.which("docker-registry"))

    def _start_containerd(self, spawn: Callable[[str, list[str], str | None], None]) -> None:
        root = self.dir / "containerd"
        cni_conf = self.dir / "cni"
        cni_conf.mkdir(parents=True, exist_ok=True)
        (cni_conf / "10-asr.conflist").write_text(json.dumps(self._cni_config(), indent=1))
        config = f"""version = 2
root = "{root}"
state = "{self.run_dir / "state"}"
[grpc]
  address = "{self.containerd_sock}"
[ttrpc]
  address = "{self.run_dir / "ttrpc.sock"}"
[debug]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{self.registry}/{PAUSE_NAME}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni_conf}"
"""
        (self.dir / "containerd.toml").write_text(config)
        spawn("containerd", [f"--config={self.dir / 'containerd.toml'}"], shutil.which("containerd"))
        deadline = time.monotonic() + 30
        while not self.containerd_sock.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"containerd did not start; see {self.dir.parent / 'logs' / 'containerd.log'}")
            time.sleep(0.2)

    def _cni_config(self) -> dict[str, object]:
        return {
            "cniVersion": "1.0.0",
            "name": "asr-pods",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    "ipMasq": False,  # nothing is masqueraded: nothing may leave
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP, "rangeStart": "10.99.0.10"}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.dir / "cni-ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }

    def _pause_image(self) -> str:
        """localhost/asr-pause: the pause binary of build.sh, FROM scratch (no registry to pull one from)."""
        ref = f"localhost/{PAUSE_TAG}"
        if sh("podman", "image", "exists", ref, check=False).returncode == 0:
            return ref
        ctr = sh("buildah", "from", "scratch").stdout.strip()
        try:
            sh("buildah", "copy", ctr, str(self.bin / "pause"), "/pause")
            sh("buildah", "config", "--entrypoint", '["/pause"]', "--user", "65535:65535", ctr)
            sh("buildah", "commit", ctr, ref)
        finally:
            sh("buildah", "rm", ctr, check=False)
        return ref

    def push(self, local_ref: str, name: str) -> str:
        """Push a local image into the loopback registry; the reference pods use."""
        remote = f"{self.registry}/{name}"
        sh("podman", "push", "--tls-verify=false", "--compression-format", "zstd", local_ref, f"docker://{remote}")
        return remote

    def _write_configs(self, server: str) -> None:
        write_kubeconfig(self.dir / "kubelet.kubeconfig", server, self.pki, "kubelet")
        write_kubeconfig(self.dir / "kube-proxy.kubeconfig", server, self.pki, "kube-proxy")
        pki = self.pki
        kubelet = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": NODE_IP,
            "port": free_port(),
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": free_port(),
            "cgroupDriver": "cgroupfs",
            "failCgroupV1": False,
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{self.containerd_sock}",
            "resolvConf": str(self.dir / "resolv.conf"),
            "podLogsDir": str(self.dir / "pod-logs"),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(pki / "ca.crt")},
            },
            "authorization": {"mode": "Webhook"},
            "tlsCertFile": str(pki / "kubelet-serving.crt"),
            "tlsPrivateKeyFile": str(pki / "kubelet-serving.key"),
            # a shared test machine's disk: evict only when it is really full
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "2%", "imagefs.available": "2%"},
            "imageGCHighThresholdPercent": 99,
            "imageGCLowThresholdPercent": 98,
            "serializeImagePulls": False,
            "maxPods": 30,
        }
        (self.dir / "kubelet.yaml").write_text(json.dumps(kubelet, indent=1))
        proxy = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "iptables",
            "clientConnection": {"kubeconfig": str(self.dir / "kube-proxy.kubeconfig")},
            "hostnameOverride": NODE_NAME,
            "bindAddress": NODE_IP,
            "clusterCIDR": POD_CIDR,
            "healthzBindAddress": f"127.0.0.1:{free_port()}",
            "metricsBindAddress": f"127.0.0.1:{free_port()}",
            "nodePortAddresses": [f"{NODE_IP}/32"],
            # leave the host's conntrack table sizes and timeouts alone
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
            "iptables": {"localhostNodePorts": False},  # no route_localnet
        }
        (self.dir / "kube-proxy.yaml").write_text(json.dumps(proxy, indent=1))

    def _kubelet_args(self) -> list[str]:
        return [
            f"--config={self.dir / 'kubelet.yaml'}", f"--kubeconfig={self.dir / 'kubelet.kubeconfig'}",
            f"--root-dir={self.dir / 'kubelet'}", f"--cert-dir={self.dir / 'kubelet-pki'}",
            f"--hostname-override={NODE_NAME}", f"--node-ip={NODE_IP}",
            "--node-labels=type=real,asr-platform.io/real-node=true", "--v=1",
        ]  # fmt: skip

    # --- teardown --------------------------------------------------------------------------------------------
    def drain(self, kubectl: Callable[..., subprocess.CompletedProcess[str]], timeout_s: float = 90) -> None:
        """Delete the node's pods and wait until containerd runs no task (else veths, netns and mounts stay)."""
        if not self.containerd_sock.exists():
            return
        kubectl("delete", "pods", "-A", f"--field-selector=spec.nodeName={NODE_NAME}", "--grace-period=5",
                "--wait=false", check=False)  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while self._tasks() and time.monotonic() < deadline:
            time.sleep(1)

    def _ctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        return sh("ctr", "--address", str(self.containerd_sock), "-n", "k8s.io", *args, check=False)

    def _tasks(self) -> list[str]:
        return self._ctr("tasks", "ls", "-q").stdout.split()

    def force_stop_tasks(self) -> None:
        for task in self._tasks():
            self._ctr("tasks", "kill", "-s", "SIGKILL", task)
        deadline = time.monotonic() + 15
        while self._tasks() and time.monotonic() < deadline:
            time.sleep(0.5)
        for task in self._tasks():
            self._ctr("tasks", "delete", "-f", task)

    def restore_host(self) -> None:
        """After every process stopped: mounts, netns, shims, bridge, routes, iptables, sysctls, cgroups, paths."""
        for pid in self._shim_pids():
            os.kill(pid, signal.SIGKILL)
        self._unmount_under((self.dir, self.run_dir))
        if not self.saved.exists():
            return
        state = json.loads(self.saved.read_text())
        if os.path.isdir("/run/netns"):
            for ns in set(os.listdir("/run/netns")) - set(state["netns"]):
                sh("ip", "netns", "delete", ns, check=False)
        sh("ip", "route", "del", "blackhole", FAKE_POD_CIDR, check=False)
        sh("ip", "route", "del", SERVICE_CIDR, "dev", BRIDGE, check=False)
        sh("ip", "link", "del", BRIDGE, check=False)
        _restore_tables("iptables", state["iptables"])
        _restore_tables("ip6tables", state["ip6tables"])
        for name, value in state["sysctls"].items():
            if _sysctl_path(name).read_text().strip() != value:
                _sysctl_path(name).write_text(value)
        for path in sorted(set(str(p) for p in CGROUP_ROOT.glob("*/kubepods*")) - set(state["cgroups"])):
            _remove_cgroup(pathlib.Path(path))
        for path in set(HOST_PATHS) - set(state["paths"]):
            shutil.rmtree(path, ignore_errors=True)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self.saved.unlink()

    def _shim_pids(self) -> list[int]:
        pids = []
        for proc in pathlib.Path("/proc").glob("[0-9]*"):
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if (
                cmdline
                and cmdline[0].endswith(b"containerd-shim-runc-v2")
                and str(self.containerd_sock).encode() in cmdline
            ):
                pids.append(int(proc.name))
        return pids

    @staticmethod
    def _unmount_under(roots: tuple[pathlib.Path, ...]) -> None:
        mounts = [line.split()[1] for line in pathlib.Path("/proc/self/mounts").read_text().splitlines()]
        for mount in sorted(mounts, key=len, reverse=True):  # deepest first
            if any(mount == str(r) or mount.startswith(f"{r}/") for r in roots):
                sh("umount", "-l", mount, check=False)


def _restore_tables(tool: str, saved: str) -> None:
    """The tables as saved (a restore flushes each table it loads, user chains included); tables that were not
    in use then are emptied (nft keeps an empty table; its rules and chains are what counted)."""
    if saved.strip():
        sh(f"{tool}-restore", input=saved)
    present = set(re.findall(r"^\*(\w+)", saved, flags=re.M))
    for table in ("filter", "nat", "mangle", "raw", "security"):
        if table not in present:
            sh(tool, "-t", table, "-F", check=False)
            sh(tool, "-t", table, "-X", check=False)


def _remove_cgroup(path: pathlib.Path) -> None:
    """rmdir the kubelet's cgroup tree, deepest first (a cgroup directory goes only when it holds no process)."""
    for child in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            child.rmdir()
    with contextlib.suppress(OSError):
        path.rmdir()
