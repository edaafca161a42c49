"""KEDA's HTTP add-on in the local cluster (started by autoscalers.py after KEDA): what lets an ASRDeployment with
`autoscaling.minReplicas: 0` sit at zero pods and still answer its first request.

  - the interceptor (build.sh, the add-on's Go module): the proxy clients send to, with the service's name as the
    Host; it holds a request while the target has no ready endpoint and counts it for the scaler, then forwards
    to `<service>.<namespace>:<port>`. The local cluster has no DNS server, so it runs in a private mount
    namespace whose /etc/hosts is service_hosts.py's file (the Services' ClusterIPs, which kube-proxy routes);
  - the external scaler: KEDA's `external-push` trigger (the ASRDeployment's ScaledObject) asks it whether a
    host has pending requests; it reads the interceptors' queues through their admin Service's EndpointSlice,
    here one endpoint: the host process on the node's address.

The add-on's own operator is not run: the asr-operator writes the ScaledObject itself and marks its
HTTPScaledObject `skip-scaledobject-creation`, which leaves that operator nothing to do but status. Both run as the
ServiceAccount users the add-on's RBAC binds (its manifests, named as its kustomization names them).
"""

from __future__ import annotations

import pathlib
import sys
from typing import Any

from cluster import HERE, NODE_IP, free_port, write_kubeconfig

BINARIES = ["keda-http-interceptor", "keda-http-scaler"]
NAMESPACE, PREFIX = "keda", "keda-add-ons-http-"
ADMIN_SERVICE, PROXY_SERVICE, SCALER_SERVICE = (
    f"{PREFIX}interceptor-admin", f"{PREFIX}interceptor-proxy", f"{PREFIX}external-scaler"
)  # fmt: skip
RBAC_MANIFESTS = ("interceptor-role.yaml", "interceptor-role_binding.yaml", "scaler-role.yaml",
                  "scaler-role_binding.yaml")  # fmt: skip


def kustomized(obj: dict[str, Any]) -> dict[str, Any]:
    """What the add-on's kustomization (namePrefix keda-add-ons-http-, namespace keda) makes of one RBAC object."""
    obj["metadata"]["name"] = PREFIX + obj["metadata"]["name"]
    if obj["kind"] in ("Role", "RoleBinding"):
        obj["metadata"]["namespace"] = NAMESPACE
    if "roleRef" in obj:
        obj["roleRef"]["name"] = PREFIX + obj["roleRef"]["name"]
    for subject in obj.get("subjects") or []:
        subject["name"], subject["namespace"] = PREFIX + subject["name"], NAMESPACE
    return obj


class HttpAddon:
    def __init__(self, autoscalers: Any) -> None:
        self.up = autoscalers  # its kubectl helpers, cluster, pki and manifests
        self.dir = autoscalers.dir / "http-addon"

    def start(self, spawn: Any, server: str, ports: dict[str, int]) -> dict[str, str]:
        """Start both; returns what tests need: the interceptor's proxy URL and the scaler's address."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for user in ("keda-http-interceptor", "keda-http-scaler"):
            write_kubeconfig(self.dir / f"{user}.kubeconfig", server, self.up.pki, user)
        for name in RBAC_MANIFESTS:
            for obj in self.up._yaml_to_json(self.up.manifests / name):
                self.up._apply(kustomized(obj))
        for name, port in ((ADMIN_SERVICE, ports["addon_admin"]), (PROXY_SERVICE, ports["addon_proxy"]),
                           (SCALER_SERVICE, ports["addon_scaler"])):  # fmt: skip
            self._host_service(name, port)
        self._start_interceptor(spawn, ports)
        spawn(
            "keda-http-scaler", [],
            env={"KUBECONFIG": str(self.dir / "keda-http-scaler.kubeconfig"),
                 "KEDA_HTTP_SCALER_PORT": str(ports["addon_scaler"]),
                 "KEDA_HTTP_SCALER_TARGET_ADMIN_NAMESPACE": NAMESPACE,
                 "KEDA_HTTP_SCALER_TARGET_ADMIN_SERVICE": ADMIN_SERVICE,
                 "KEDA_HTTP_SCALER_TARGET_ADMIN_DEPLOYMENT": f"{PREFIX}interceptor",
                 "KEDA_HTTP_SCALER_TARGET_ADMIN_PORT": str(ports["addon_admin"]),
                 "KEDA_HTTP_SCALER_STREAM_INTERVAL_MS": "200"},
        )  # fmt: skip
        return {
            "interceptor_url": f"http://{NODE_IP}:{ports['addon_proxy']}",
            "http_scaler_address": f"{NODE_IP}:{ports['addon_scaler']}",
            "interceptor_admin_url": f"http://{NODE_IP}:{ports['addon_admin']}",
        }

    @staticmethod
    def ports() -> dict[str, int]:
        return {name: free_port() for name in ("addon_proxy", "addon_admin", "addon_scaler", "addon_metrics")}

    def _start_interceptor(self, spawn: Any, ports: dict[str, int]) -> None:
        hosts = self.dir / "hosts"
        hosts.write_text(pathlib.Path("/etc/hosts").read_text())
        spawn(
            "service-hosts",
            [str(HERE / "service_hosts.py"), f"--kubectl={self.up.cluster.bin / 'kubectl'}",
             f"--kubeconfig={self.dir / 'keda-http-interceptor.kubeconfig'}", f"--out={hosts}"],
            sys.executable,
        )  # fmt: skip
        binary = str(self.up.cluster.bin / "keda-http-interceptor")
        # unshare execs (no fork) and so do sh and mount's caller: the pid file names the interceptor itself.
        spawn(
            "keda-http-interceptor",
            ["--mount", "--propagation", "private", "--", "/bin/sh", "-c",
             'mount --bind "$0" /etc/hosts && exec "$1" --zap-log-level=info', str(hosts), binary],
            "/usr/bin/unshare",
            env={"KUBECONFIG": str(self.dir / "keda-http-interceptor.kubeconfig"),
                 "KEDA_HTTP_CURRENT_NAMESPACE": NAMESPACE, "KEDA_HTTP_PROXY_PORT": str(ports["addon_proxy"]),
                 "KEDA_HTTP_ADMIN_PORT": str(ports["addon_admin"]),
                 "OTEL_PROM_EXPORTER_PORT": str(ports["addon_metrics"]),
                 # the add-on's own deployment values; per-host limits come from each HTTPScaledObject's timeouts
                 "KEDA_CONDITION_WAIT_TIMEOUT": "20s", "KEDA_RESPONSE_HEADER_TIMEOUT": "500ms",
                 "KEDA_HTTP_ENDPOINTS_CACHE_POLLING_INTERVAL_MS": "250"},
        )  # fmt: skip

    def _host_service(self, name: str, port: int) -> None:
        """A Service without a selector and its one EndpointSlice: the host process on the node's address (the
        scaler finds the interceptors through the admin Service's EndpointSlices)."""
        self.up._apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NAMESPACE},
                        "spec": {"ports": [{"name": "http", "port": port, "targetPort": port}]}})  # fmt: skip
        self.up._apply({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": NAMESPACE,
                         "labels": {"kubernetes.io/service-name": name,
                                    "endpointslice.kubernetes.io/managed-by": "asr-local-cluster"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
            "endpoints": [{"addresses": [NODE_IP], "conditions": {"ready": True}}],
        })  # fmt: skip
