"""The autoscaling stack of the local cluster (`cluster.py up --real-node --autoscaling`): what turns the inference
servers' `asr_load` into replicas, all of it real and run as host processes like the control plane.

  - Prometheus (Debian's) scrapes the real node's pods as their prometheus.io annotations say (the usual
    `kubernetes-pods` job: pod labels, `namespace` and `pod` kept); Debian builds it without Kubernetes discovery,
    so pod_discovery.py lists the pods and hands them over as a target file with that discovery's labels;
  - KEDA's operator, metrics API server and admission webhooks (build.sh, KEDA's Go module): the metrics server
    registered as `v1beta1.external.metrics.k8s.io`, the webhooks as KEDA's own ValidatingWebhookConfiguration;
  - prometheus-adapter (build.sh) serving `v1beta1.custom.metrics.k8s.io` with the rule the chart ships
    (`prometheusAdapter.enabled`), rendered by helm from charts/asr-platform;
  - KEDA's HTTP add-on, interceptor and external scaler (http_addon.py): scale to zero and back on a request.

Each runs as the ServiceAccount user its upstream RBAC binds (pki.py client certificates); KEDA's RBAC is its own
manifests, copied by build.sh. The API server reaches the metrics servers through Services without selectors whose
Endpoints are the node's address (aggregator routing) and the webhooks by URL, all verified against the cluster CA.
They listen on the real node's address (10.99.0.1), which is why this needs the real node.
"""

from __future__ import annotations

import base64
import json
import pathlib
import shutil
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from typing import Any

from cluster import HERE, NODE_IP, REPO, free_port, write_kubeconfig
from http_addon import BINARIES as HTTP_ADDON_BINARIES
from http_addon import HttpAddon

BINARIES = ["keda-operator", "keda-metrics-apiserver", "keda-admission-webhooks", "prometheus-adapter",
            *HTTP_ADDON_BINARIES]  # fmt: skip
PROMETHEUS = "/usr/bin/prometheus"
KEDA_NAMESPACE, MONITORING_NAMESPACE = "keda", "monitoring"
EXTERNAL_METRICS, CUSTOM_METRICS = "v1beta1.external.metrics.k8s.io", "v1beta1.custom.metrics.k8s.io"
SCRAPE_INTERVAL = "2s"  # tests wait on scale-ups; a production Prometheus scrapes every 15-30 s
NODE_NAME = "asr-node-0"

Spawn = Callable[..., None]


def missing_binaries(bin_dir: pathlib.Path) -> list[str]:
    missing = [n for n in BINARIES if not (bin_dir / n).exists()]
    return missing + ([PROMETHEUS] if not pathlib.Path(PROMETHEUS).exists() else [])


class Autoscalers:
    """Started after the real node (cluster.up), stopped first (cluster.down); state in <cluster dir>/autoscaling."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        self.dir = cluster.dir / "autoscaling"
        self.pki = cluster.pki
        self.manifests = cluster.bin.parent / "manifests"

    @property
    def prometheus_url(self) -> str:
        """Where Prometheus answers (the address an ASRDeployment's autoscaling.prometheus.serverAddress names)."""
        return self.addresses()["prometheus_url"]

    def addresses(self) -> dict[str, str]:
        """prometheus_url; interceptor_url (KEDA HTTP add-on's proxy: send with Host <name>.<namespace>),
        interceptor_admin_url, http_scaler_address (an ASRDeployment's autoscaling.httpAddon.scalerAddress)."""
        saved = json.loads((self.dir / "ports.json").read_text())
        return {k: str(v) for k, v in saved.items() if isinstance(v, str)}

    # --- start ---------------------------------------------------------------------------------------------
    def start(self, spawn: Spawn, server: str, deadline: float) -> None:
        missing = missing_binaries(self.cluster.bin)
        if missing:
            raise RuntimeError(f"missing for --autoscaling: {', '.join(missing)} (run tools/cluster/build.sh)")
        self.dir.mkdir(parents=True, exist_ok=True)
        ports = {name: free_port() for name in ("prometheus", "grpc", "keda_api", "webhooks", "adapter_api")}
        ports |= {name: free_port() for name in ("op_metrics", "op_probe", "api_metrics", "wh_metrics", "wh_probe")}
        ports |= HttpAddon.ports()
        prometheus_url = f"http://{NODE_IP}:{ports['prometheus']}"
        for user in ("keda", "prometheus-adapter", "prometheus"):
            write_kubeconfig(self.dir / f"{user}.kubeconfig", server, self.pki, user)
        self._apply_rbac()
        self._start_prometheus(spawn, ports["prometheus"])
        self._start_keda(spawn, ports)
        self._start_adapter(spawn, ports["adapter_api"], prometheus_url)
        self._register(ports)
        addon = HttpAddon(self).start(spawn, server, ports)
        (self.dir / "ports.json").write_text(json.dumps({**ports, "prometheus_url": prometheus_url, **addon}, indent=1))
        self._wait_ready(deadline, prometheus_url, ports)

    def _kubectl(self, *args: str, input: str | None = None) -> str:
        return str(self.cluster.kubectl(*args, input=input).stdout)

    def _apply(self, obj: dict[str, Any]) -> None:
        self._kubectl("apply", "-f", "-", input=json.dumps(obj))

    def _yaml_to_json(self, path: pathlib.Path) -> list[dict[str, Any]]:
        """A YAML file's objects, read by kubectl (the cluster scripts use only the standard library)."""
        text, decoder, objects = (
            self._kubectl("create", "--dry-run=client", "-o", "json", "-f", str(path)),
            json.JSONDecoder(),
            [],
        )
        at = 0
        while at < len(text.rstrip()):  # one JSON document per YAML document (a file with `---` gives several)
            out, at = decoder.raw_decode(text, at)
            objects += list(out["items"]) if out.get("kind") == "List" else [out]
            while at < len(text) and text[at].isspace():
                at += 1
        return objects

    def _apply_rbac(self) -> None:
        self._kubectl("create", "namespace", KEDA_NAMESPACE)
        self._kubectl("apply", "-f", str(HERE / "autoscaling-rbac.yaml"))
        for name in ("rbac-role.yaml", "rbac-role_binding.yaml", "metrics-server-role.yaml",
                     "metrics-server-role_binding.yaml"):  # fmt: skip
            self._kubectl("apply", "-f", str(self.manifests / name))

    def _start_prometheus(self, spawn: Spawn, port: int) -> None:
        # Debian's Prometheus has no Kubernetes discovery: pod_discovery.py writes the real node's pods, with the
        # labels that discovery gives, to a file; the relabelling below is the usual annotation-driven job.
        targets = self.dir / "pod-targets.json"
        targets.write_text("[]")
        spawn(
            "pod-discovery",
            [str(HERE / "pod_discovery.py"), f"--kubectl={self.cluster.bin / 'kubectl'}",
             f"--kubeconfig={self.dir / 'prometheus.kubeconfig'}", f"--node={NODE_NAME}", f"--out={targets}"],
            sys.executable,
        )  # fmt: skip
        relabel = [
            {"source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"], "action": "keep",
             "regex": "true"},
            {"source_labels": ["__meta_kubernetes_pod_phase"], "action": "drop", "regex": "Pending|Succeeded|Failed"},
            {"source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_path"], "target_label":
             "__metrics_path__", "regex": "(.+)"},
            {"source_labels": ["__address__", "__meta_kubernetes_pod_annotation_prometheus_io_port"],
             "regex": "([^:]+)(?::\\d+)?;(\\d+)", "replacement": "$1:$2", "target_label": "__address__"},
            {"action": "labelmap", "regex": "__meta_kubernetes_pod_label_(.+)"},
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        ]  # fmt: skip
        config = {  # JSON is YAML
            "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
            "scrape_configs": [{"job_name": "kubernetes-pods", "relabel_configs": relabel,
                                "file_sd_configs": [{"files": [str(targets)], "refresh_interval": "2s"}]}],
        }  # fmt: skip
        (self.dir / "prometheus.yml").write_text(json.dumps(config, indent=1))
        spawn(
            "prometheus",
            [f"--config.file={self.dir / 'prometheus.yml'}", f"--storage.tsdb.path={self.dir / 'prometheus-data'}",
             f"--web.listen-address={NODE_IP}:{port}", "--log.level=warn"],
            PROMETHEUS,
        )  # fmt: skip

    def _keda_certs(self) -> pathlib.Path:
        """KEDA's certificate directory layout (ca.crt, tls.crt, tls.key), shared by its three processes: it is the
        webhook's and metrics server's serving certificate and both ends of the operator's gRPC mutual TLS."""
        certs = self.dir / "keda-certs"
        certs.mkdir(exist_ok=True)
        for src, dst in (("ca.crt", "ca.crt"), ("autoscalers.crt", "tls.crt"), ("autoscalers.key", "tls.key")):
            shutil.copyfile(self.pki / src, certs / dst)
        return certs

    def _start_keda(self, spawn: Spawn, ports: dict[str, int]) -> None:
        certs = self._keda_certs()
        env = {"KUBECONFIG": str(self.dir / "keda.kubeconfig"), "WATCH_NAMESPACE": "",
               "POD_NAMESPACE": KEDA_NAMESPACE, "KEDA_CLUSTER_OBJECT_NAMESPACE": KEDA_NAMESPACE}  # fmt: skip
        log = ["--zap-log-level=info", "--zap-encoder=console"]
        spawn(
            "keda-operator",
            [f"--metrics-bind-address=127.0.0.1:{ports['op_metrics']}",
             f"--health-probe-bind-address=127.0.0.1:{ports['op_probe']}",
             f"--metrics-service-bind-address={NODE_IP}:{ports['grpc']}", f"--cert-dir={certs}",
             "--enable-cert-rotation=false", f"--ca-dir={certs}", *log],
            env=env,
        )  # fmt: skip
        kubeconfig = str(self.dir / "keda.kubeconfig")
        spawn(
            "keda-metrics-apiserver",
            [f"--secure-port={ports['keda_api']}", f"--bind-address={NODE_IP}", f"--cert-dir={certs}",
             f"--tls-cert-file={certs / 'tls.crt'}", f"--tls-private-key-file={certs / 'tls.key'}",
             f"--client-ca-file={certs / 'ca.crt'}", f"--lister-kubeconfig={kubeconfig}",
             f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
             f"--metrics-service-address={NODE_IP}:{ports['grpc']}", f"--port={ports['api_metrics']}", *log],
            env=env,
        )  # fmt: skip
        spawn(
            "keda-admission-webhooks",
            [f"--port={ports['webhooks']}", f"--cert-dir={certs}",
             f"--metrics-bind-address=127.0.0.1:{ports['wh_metrics']}",
             f"--health-probe-bind-address=127.0.0.1:{ports['wh_probe']}", *log],
            env=env,
        )  # fmt: skip

    def _adapter_rules(self) -> str:
        """The prometheus-adapter rule the chart ships, rendered by helm (and read back by kubectl)."""
        helm = subprocess.run(
            [str(self.cluster.bin / "helm"), "template", "asr", str(REPO / "charts" / "asr-platform"),
             "--set", "prometheusAdapter.enabled=true", "--show-only", "templates/prometheus-adapter-configmap.yaml"],
            capture_output=True, text=True, check=True, timeout=120,
        )  # fmt: skip
        return self._kubectl(
            "create", "--dry-run=client", "-o", "jsonpath={.data.rules\\.yaml}", "-f", "-", input=helm.stdout
        )

    def _start_adapter(self, spawn: Spawn, port: int, prometheus_url: str) -> None:
        (self.dir / "adapter-rules.yaml").write_text(self._adapter_rules())
        kubeconfig = str(self.dir / "prometheus-adapter.kubeconfig")
        spawn(
            "prometheus-adapter",
            [f"--prometheus-url={prometheus_url}/", f"--config={self.dir / 'adapter-rules.yaml'}",
             "--metrics-relist-interval=10s", f"--secure-port={port}", f"--bind-address={NODE_IP}",
             f"--tls-cert-file={self.pki / 'autoscalers.crt'}",
             f"--tls-private-key-file={self.pki / 'autoscalers.key'}",
             f"--cert-dir={self.dir / 'adapter-certs'}", f"--lister-kubeconfig={kubeconfig}",
             f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}", "--v=1"],
        )  # fmt: skip

    # --- registration --------------------------------------------------------------------------------------
    def _register(self, ports: dict[str, int]) -> None:
        ca_bundle = base64.b64encode((self.pki / "ca.crt").read_bytes()).decode()
        self._endpoint_service(KEDA_NAMESPACE, "keda-metrics-apiserver", ports["keda_api"])
        self._endpoint_service(MONITORING_NAMESPACE, "prometheus-adapter", ports["adapter_api"])
        (keda_api,) = self._yaml_to_json(self.manifests / "metrics-server-api_service.yaml")
        keda_api["spec"] |= {"caBundle": ca_bundle, "service": {**keda_api["spec"]["service"], "port": 443}}
        self._apply(keda_api)
        self._apply({
            "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": {"name": CUSTOM_METRICS},
            "spec": {"group": "custom.metrics.k8s.io", "version": "v1beta1", "groupPriorityMinimum": 100,
                     "versionPriority": 100, "caBundle": ca_bundle,
                     "service": {"name": "prometheus-adapter", "namespace": MONITORING_NAMESPACE, "port": 443}},
        })  # fmt: skip
        (webhooks,) = self._yaml_to_json(self.manifests / "webhooks-validation_webhooks.yaml")
        for hook in webhooks["webhooks"]:
            path = hook["clientConfig"]["service"]["path"]
            hook["clientConfig"] = {"url": f"https://{NODE_IP}:{ports['webhooks']}{path}", "caBundle": ca_bundle}
        self._apply(webhooks)

    def _endpoint_service(self, namespace: str, name: str, port: int) -> None:
        """A Service without a selector whose one endpoint is the host process on the node's address."""
        self._apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
                     "spec": {"ports": [{"name": "https", "port": 443, "targetPort": port}]}})  # fmt: skip
        self._apply({
            "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": namespace},
            "subsets": [{"addresses": [{"ip": NODE_IP}], "ports": [{"name": "https", "port": port}]}],
        })  # fmt: skip

    def _wait_ready(self, deadline: float, prometheus_url: str, ports: dict[str, int]) -> None:
        def http_ok(url: str) -> Callable[[], bool]:
            def check() -> bool:
                try:
                    with urllib.request.urlopen(url, timeout=5) as resp:
                        return bool(resp.status == 200)
                except OSError:
                    return False

            return check

        def available(name: str) -> Callable[[], bool]:
            def check() -> bool:
                out = self.cluster.kubectl("get", "apiservice", name, "-o", "json", check=False)
                conditions = (
                    json.loads(out.stdout).get("status", {}).get("conditions", []) if not out.returncode else []
                )
                return any(c["type"] == "Available" and c["status"] == "True" for c in conditions)

            return check

        wait = self.cluster._wait_for
        wait(deadline, "Prometheus ready", http_ok(f"{prometheus_url}/-/ready"))
        wait(deadline, "KEDA's operator ready", http_ok(f"http://127.0.0.1:{ports['op_probe']}/readyz"))
        wait(deadline, "KEDA's admission webhooks ready", http_ok(f"http://127.0.0.1:{ports['wh_probe']}/readyz"))
        wait(
            deadline, "KEDA HTTP add-on's interceptor ready", http_ok(f"http://{NODE_IP}:{ports['addon_admin']}/queue")
        )
        wait(deadline, "KEDA HTTP add-on's scaler listening", lambda: _listening(NODE_IP, ports["addon_scaler"]))
        wait(deadline, f"APIService {EXTERNAL_METRICS} Available (KEDA)", available(EXTERNAL_METRICS))
        wait(deadline, f"APIService {CUSTOM_METRICS} Available (prometheus-adapter)", available(CUSTOM_METRICS))

    # --- stop ----------------------------------------------------------------------------------------------
    def forget(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _listening(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
        return True
    except OSError:
        return False
