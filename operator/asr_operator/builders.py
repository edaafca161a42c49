"""Pure builders: one ASRDeployment in, one child manifest (a plain dict) out. No API calls, no clock.

Every child is labelled with the app.kubernetes.io/* set and named after the ASRDeployment (the ConfigMap gets
a `-config` suffix). Ownership (ownerReferences) is added by the reconciler with `kopf.adopt`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from .quantity import canonical_quantity as q
from .scratch import HEADROOM_MI, default_scratch_mi
from .settings import DEFAULT_INFERENCE_IMAGE
from .spec import ASRDeploymentSpec, parse_quantity

APP_NAME = "asr-inference"
MANAGED_BY = "asr-operator"
PART_OF = "asr-platform"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_PART_OF = "app.kubernetes.io/part-of"
CHECKSUM_ANNOTATION = "asr-platform.io/config-checksum"

CONTAINER_NAME = "asr-serve"
CONTAINER_PORT = 8000
PORT_NAME = "http"
MODELS_DIR = "/models"
MODELS_CACHE_DIR = f"{MODELS_DIR}/cache"
LOG_DIR = "/var/log/asr"
LOG_FILE = f"{LOG_DIR}/server.log"
PRESTOP_SLEEP_S = 5
GRACE_MARGIN_S = 15
LOG_HEADROOM_MI = 64
DEFAULT_CACHE_SIZE = "20Gi"
LOAD_METRIC = "asr_load"  # the servers' autoscaling signal: queued items + realtime streams by audio rate
STARTUP_PERIOD_S = 10
# Hub models download at start: 180 x 10 s = 30 min. Local and demo models only load: 60 x 10 s = 10 min.
STARTUP_FAILURES_HUB = 180
STARTUP_FAILURES_LOCAL = 60


def pod_selector(name: str) -> dict[str, str]:
    """The labels that select the pods of the ASRDeployment `name`."""
    return {LABEL_NAME: APP_NAME, LABEL_INSTANCE: name}


def pod_selector_string(name: str) -> str:
    """`pod_selector` as a label-selector string (the status' `selector`, list calls)."""
    return ",".join(f"{k}={v}" for k, v in sorted(pod_selector(name).items()))


@dataclass(frozen=True)
class ASR:
    """What the builders need of one ASRDeployment."""

    name: str
    namespace: str
    spec: ASRDeploymentSpec
    default_image: str = DEFAULT_INFERENCE_IMAGE

    @property
    def selector(self) -> dict[str, str]:
        return pod_selector(self.name)

    @property
    def selector_string(self) -> str:
        return pod_selector_string(self.name)

    @property
    def configmap_name(self) -> str:
        return f"{self.name}-config"

    @property
    def endpoint(self) -> str:
        return f"http://{self.name}.{self.namespace}.svc:{self.spec.service.port}"

    @property
    def image(self) -> str:
        return resolve_image(self.spec, self.default_image)

    def labels(self, component: str) -> dict[str, str]:
        return {
            LABEL_NAME: APP_NAME,
            LABEL_INSTANCE: self.name,
            LABEL_COMPONENT: component,
            LABEL_MANAGED_BY: MANAGED_BY,
            LABEL_PART_OF: PART_OF,
        }

    def metadata(self, component: str, name: str | None = None) -> dict[str, Any]:
        return {"name": name or self.name, "namespace": self.namespace, "labels": self.labels(component)}


def split_image(image: str) -> tuple[str, str | None]:
    """`repo:tag` / `repo@sha256:...` / `repo` → (repository, tag-or-digest); a registry port is no tag."""
    if "@" in image:
        repo, digest = image.split("@", 1)
        return repo, digest
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon + 1 :]
    return image, None


def resolve_image(spec: ASRDeploymentSpec, default_image: str) -> str:
    default_repo, default_tag = split_image(default_image)
    repo = (spec.image.repository if spec.image else None) or default_repo
    tag = (spec.image.tag if spec.image else None) or default_tag
    if not tag:
        return repo
    return f"{repo}@{tag}" if tag.startswith("sha256:") else f"{repo}:{tag}"


def _num(v: float) -> str:
    """A settings number as the server parses it: integral floats without the trailing .0."""
    return str(int(v)) if float(v).is_integer() else str(v)


def drain_timeout_s(spec: ASRDeploymentSpec) -> int:
    """On SIGTERM the server finishes queued and in-flight work for up to one request timeout."""
    return spec.limits.request_timeout_seconds


def termination_grace_s(spec: ASRDeploymentSpec) -> int:
    """preStop sleep + drain + margin: the kubelet never kills a pod that is still draining."""
    return PRESTOP_SLEEP_S + drain_timeout_s(spec) + GRACE_MARGIN_S


def log_volume_size_mi(spec: ASRDeploymentSpec) -> int:
    """The current file + maxFiles rotated ones, each up to maxSizeMB, plus headroom."""
    rot = spec.logging.rotation
    return rot.max_size_mb * (rot.max_files + 1) + LOG_HEADROOM_MI


def scratch_mi(spec: ASRDeploymentSpec) -> int:
    """The /tmp volume in MiB: limits.scratchSize, else room for a few worst-case uploads (`scratch.py`)."""
    lim = spec.limits
    if lim.scratch_size:
        return int(parse_quantity(lim.scratch_size) // 2**20)
    return default_scratch_mi(lim.max_upload_mb, lim.max_audio_seconds)


def server_env(asr: ASR) -> dict[str, str]:
    """The inference server's settings (ASR_* env vars of asr_inference.config.Settings) + cache locations."""
    s = asr.spec
    env: dict[str, str] = {}
    if not s.model.is_demo:  # unset ASR_MODEL: the server serves its embedded demo model
        env["ASR_MODEL"] = s.model.source
        env["ASR_HUB"] = s.model.effective_hub
        if s.model.revision:
            env["ASR_MODEL_REVISION"] = s.model.revision
    env.update(
        {
            "ASR_FAMILY": s.model.family,
            "ASR_DEVICE": s.device,
            "ASR_PRECISION": s.precision,
            "ASR_RUNTIME": s.model.runtime,
            "ASR_QUANTIZE": s.model.quantize,
            "ASR_ONNX_CACHE_DIR": f"{MODELS_CACHE_DIR}/onnx",  # on the model cache volume: a restart reuses it
            "ASR_MAX_BATCH_SIZE": str(s.batching.max_batch_size),
            "ASR_MAX_WAIT_MS": str(s.batching.max_wait_ms),
            "ASR_MAX_BATCH_AUDIO_S": _num(s.batching.max_batch_audio_seconds),
            "ASR_MAX_LENGTH_RATIO": f"{s.batching.max_length_ratio:g}",
            "ASR_MAX_QUEUE_SIZE": str(s.batching.max_queue_size),
            "ASR_MAX_QUEUE_WAIT_S": f"{s.batching.max_queue_wait_seconds:g}",
            "ASR_REQUEST_TIMEOUT_S": str(s.limits.request_timeout_seconds),
            "ASR_STREAM_MAX_SESSIONS": str(s.streaming.max_sessions),
            "ASR_STREAM_IDLE_TIMEOUT_S": _num(s.streaming.idle_timeout_seconds),
            "ASR_STREAM_PARTIAL_INTERVAL_MS": str(s.streaming.partial_interval_ms),
            "ASR_MAX_UPLOAD_MB": _num(s.limits.max_upload_mb),
            "ASR_MAX_AUDIO_S": _num(s.limits.max_audio_seconds),
            "ASR_SCRATCH_MB": str(scratch_mi(s) - HEADROOM_MI),
            "ASR_DRAIN_TIMEOUT_S": str(drain_timeout_s(s)),
            "ASR_LOG_LEVEL": s.logging.level,
            "ASR_LOG_FORMAT": s.logging.format,
            "ASR_LOG_FILE": LOG_FILE,
            "ASR_LOG_MAX_BYTES": str(s.logging.rotation.max_size_mb * 1024 * 1024),
            "ASR_LOG_BACKUP_COUNT": str(s.logging.rotation.max_files),
            "ASR_HOST": "::",  # both families (IPv4, IPv6-only and dual-stack clusters); 0.0.0.0 without IPv6
            "ASR_PORT": str(CONTAINER_PORT),
            # the image's own locations (inference/Dockerfile): hub downloads under /models/cache
            "MODELSCOPE_CACHE": f"{MODELS_CACHE_DIR}/modelscope",
            "HF_HOME": f"{MODELS_CACHE_DIR}/huggingface",
            "TORCH_HOME": f"{MODELS_CACHE_DIR}/torch",
            "HOME": "/tmp",
            "XDG_CACHE_HOME": "/tmp/.cache",
        }
    )
    return env


def config_checksum(configmap: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(configmap["data"], sort_keys=True).encode()).hexdigest()


def build_configmap(asr: ASR) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": asr.metadata("config", asr.configmap_name),
        "data": server_env(asr),
    }


def _cache_volume(asr: ASR) -> dict[str, Any]:
    cache = asr.spec.model.cache
    if cache is not None and cache.pvc_name:
        return {"name": "model-cache", "persistentVolumeClaim": {"claimName": cache.pvc_name}}
    if cache is not None and cache.host_path:
        # Directory, not DirectoryOrCreate: the kubelet would create it root-owned 0755, unwritable by uid 10001.
        # The node's directory must exist, owned by (or group-writable for) 10001; the server says so at start
        # when it cannot write a hub download there.
        return {"name": "model-cache", "hostPath": {"path": cache.host_path, "type": "Directory"}}
    empty: dict[str, Any] = {"sizeLimit": q(DEFAULT_CACHE_SIZE)}
    if cache is not None and cache.empty_dir is not None:
        empty = {"sizeLimit": q(cache.empty_dir.size_limit)}
        if cache.empty_dir.medium:
            empty["medium"] = cache.empty_dir.medium
    return {"name": "model-cache", "emptyDir": empty}


def _resources(asr: ASR) -> dict[str, Any]:
    r = asr.spec.resources
    requests: dict[str, Any] = {"cpu": q(r.requests.cpu), "memory": q(r.requests.memory)}
    limits: dict[str, Any] = {}
    if r.limits.cpu:
        limits["cpu"] = q(r.limits.cpu)
    if r.limits.memory:
        limits["memory"] = q(r.limits.memory)
    if asr.spec.gpus:
        limits[r.gpu_resource_name] = q(asr.spec.gpus)
    out: dict[str, Any] = {"requests": requests}
    if limits:
        out["limits"] = limits
    return out


def _http_probe(path: str, period: int, failures: int, timeout: int = 5) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": PORT_NAME, "scheme": "HTTP"},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
        "successThreshold": 1,
    }


def initial_replicas(spec: ASRDeploymentSpec) -> int:
    """Replicas the Deployment is created with; with autoscaling, spec.replicas clamped into [min, max]."""
    a = spec.autoscaling
    if a.enabled:
        return min(max(spec.replicas, a.min_replicas), a.max_replicas)
    return spec.replicas


def _tolerations(asr: ASR) -> list[dict[str, Any]]:
    """The spec's tolerations, plus the GPU resource's taint for GPU pods: GPU nodes are commonly tainted with it,
    and clusters with the ExtendedResourceToleration admission plugin add this toleration themselves."""
    out = [t.model_dump(by_alias=True, exclude_none=True) for t in asr.spec.pod.tolerations]
    gpu = asr.spec.resources.gpu_resource_name
    if asr.spec.gpus and not any(
        t.get("key") == gpu or (not t.get("key") and t.get("operator") == "Exists") for t in out
    ):
        out.append({"key": gpu, "operator": "Exists", "effect": "NoSchedule"})
    return out


def _rollout_strategy(s: ASRDeploymentSpec) -> dict[str, Any]:
    """CPU pods surge one new pod before an old one goes. GPU pods replace one at a time: on a full GPU pool a
    surge pod never schedules and the rollout would hang; the PDB allows the same one pod down."""
    if s.gpus:
        return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def _hub_model(spec: ASRDeploymentSpec) -> bool:
    return not spec.model.is_demo and spec.model.effective_hub != "local"


def startup_budget_s(spec: ASRDeploymentSpec) -> int:
    """How long a new pod may take to become ready (its startup probe's whole allowance)."""
    return STARTUP_PERIOD_S * (STARTUP_FAILURES_HUB if _hub_model(spec) else STARTUP_FAILURES_LOCAL)


def _progress_deadline_s(spec: ASRDeploymentSpec) -> int:
    """The rollout is 'failed to progress' only after a new pod's whole startup budget (a slow model load, a hub
    download) and a margin: the Deployment's 600 s default marks a healthy slow start Degraded."""
    return max(600, startup_budget_s(spec) + 300)


def build_deployment(asr: ASR, configmap: dict[str, Any] | None = None) -> dict[str, Any]:
    s = asr.spec
    configmap = configmap or build_configmap(asr)
    hub_model = _hub_model(s)
    pod_labels = {**s.pod.labels, **asr.labels("server")}
    pod_annotations = {
        **s.pod.annotations,
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(CONTAINER_PORT),
        "prometheus.io/path": "/metrics",
        CHECKSUM_ANNOTATION: config_checksum(configmap),
    }
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": asr.image,
        "imagePullPolicy": s.image.pull_policy if s.image else "IfNotPresent",
        "command": ["asr-serve"],
        "ports": [{"name": PORT_NAME, "containerPort": CONTAINER_PORT, "protocol": "TCP"}],
        "envFrom": [{"configMapRef": {"name": asr.configmap_name}}],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            *[e.model_dump(by_alias=True, exclude_none=True) for e in s.pod.env],
        ],
        "resources": _resources(asr),
        "startupProbe": _http_probe(
            "/readyz", STARTUP_PERIOD_S, STARTUP_FAILURES_HUB if hub_model else STARTUP_FAILURES_LOCAL
        ),
        "readinessProbe": _http_probe("/readyz", 5, 3),
        "livenessProbe": _http_probe("/healthz", 10, 3),
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_SLEEP_S)]}}},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": "model-cache", "mountPath": MODELS_DIR},
            {"name": "logs", "mountPath": LOG_DIR},
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "terminationGracePeriodSeconds": termination_grace_s(s),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "fsGroup": 10001,
            # chown a large model cache volume only when its root is not already ours (not on every start)
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumes": [
            _cache_volume(asr),
            {"name": "logs", "emptyDir": {"sizeLimit": q(f"{log_volume_size_mi(s)}Mi")}},
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": q(s.resources.shm_size)}},
            {"name": "tmp", "emptyDir": {"sizeLimit": q(f"{scratch_mi(s)}Mi")}},
        ],
    }
    p = s.pod
    if p.node_selector:
        pod_spec["nodeSelector"] = dict(p.node_selector)
    if tolerations := _tolerations(asr):
        pod_spec["tolerations"] = tolerations
    if p.affinity:
        pod_spec["affinity"] = p.affinity
    if p.priority_class_name:
        pod_spec["priorityClassName"] = p.priority_class_name
    if p.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": x.name} for x in p.image_pull_secrets]
    if p.service_account_name:
        pod_spec["serviceAccountName"] = p.service_account_name
    if p.runtime_class_name:  # e.g. "nvidia" where the NVIDIA container runtime is not the node's default
        pod_spec["runtimeClassName"] = p.runtime_class_name
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": asr.metadata("server"),
        "spec": {
            "replicas": initial_replicas(s),
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": asr.selector},
            "strategy": _rollout_strategy(s),
            "progressDeadlineSeconds": _progress_deadline_s(s),
            "template": {
                "metadata": {"labels": pod_labels, "annotations": pod_annotations},
                "spec": pod_spec,
            },
        },
    }


def build_service(asr: ASR) -> dict[str, Any]:
    meta = asr.metadata("server")
    if asr.spec.service.annotations:
        meta["annotations"] = dict(asr.spec.service.annotations)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "type": asr.spec.service.type,
            "selector": asr.selector,
            "ports": [
                {
                    "name": PORT_NAME,
                    "port": asr.spec.service.port,
                    "targetPort": PORT_NAME,
                    "protocol": "TCP",
                    "appProtocol": "http",
                }
            ],
        },
    }


def wants_pdb(spec: ASRDeploymentSpec) -> bool:
    return spec.replicas > 1 or spec.autoscaling.enabled


def build_pdb(asr: ASR) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": asr.metadata("server"),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": asr.selector}},
    }


# The pod labels Prometheus keeps as series labels: the ServiceMonitor copies them (podTargetLabels); the usual
# annotation-driven `kubernetes-pods` job maps every pod label the same way (labelmap __meta_kubernetes_pod_label_).
POD_TARGET_LABELS = (LABEL_NAME, LABEL_INSTANCE)


def prometheus_label(label: str) -> str:
    """A Kubernetes label as Prometheus names it: every character outside [a-zA-Z0-9_] becomes '_'."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", label)


def build_servicemonitor(asr: ASR) -> dict[str, Any]:
    sm = asr.spec.monitoring.service_monitor
    meta = asr.metadata("monitoring")
    meta["labels"] = {**sm.labels, **meta["labels"]}
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": meta,
        "spec": {
            "selector": {"matchLabels": asr.selector},
            "namespaceSelector": {"matchNames": [asr.namespace]},
            "endpoints": [{"port": PORT_NAME, "path": "/metrics", "interval": sm.interval, "scheme": "http"}],
            "podTargetLabels": list(POD_TARGET_LABELS),  # what the autoscaler's query matches on
        },
    }


__all__ = [
    "ASR",
    "build_configmap",
    "build_deployment",
    "build_pdb",
    "build_service",
    "build_servicemonitor",
    "parse_quantity",
]
