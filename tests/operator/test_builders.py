"""The pure builders: every manifest is valid Kubernetes (kubernetes-validate, strict, 1.30 and 1.33) or, for
KEDA / prometheus-operator kinds, matches a schema of their documented fields; then what each one must say."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from asr_inference.scratch import request_scratch_bytes
from asr_operator.autoscaling import build_hpa, build_http_scaled_object, build_scaledobject
from asr_operator.builders import (
    ASR,
    CHECKSUM_ANNOTATION,
    build_configmap,
    build_deployment,
    build_pdb,
    build_service,
    build_servicemonitor,
    log_volume_size_mi,
    resolve_image,
    split_image,
    termination_grace_s,
)
from asr_operator.children import desired_children
from asr_operator.scratch import request_scratch_mi
from asr_operator.spec import ASRDeploymentSpec, InvalidSpec, parse_spec
from harness import EXAMPLES, load_example

NS = "speech"
KEDA = {"enabled": True, "engine": "keda", "prometheus": {"serverAddress": "http://prom.monitoring:9090"}}
HPA = {"enabled": True, "engine": "hpa", "minReplicas": 2, "maxReplicas": 8, "targetQueueDepth": 4}

SPECS: dict[str, dict[str, Any]] = {
    **{p.stem: load_example(p)["spec"] for p in EXAMPLES},
    "minimal-hub": {"model": {"source": "iic/SenseVoiceSmall"}},
    "local-hostpath": {
        "model": {"source": "/models/paraformer", "cache": {"hostPath": "/srv/asr-models"}},
        "device": "cpu",
    },
    "memory-cache-cpu-bf16": {
        "model": {"source": "iic/SenseVoiceSmall", "cache": {"emptyDir": {"sizeLimit": "2Gi", "medium": "Memory"}}},
        "device": "cpu",
        "precision": "bf16",
        "resources": {"limits": {"memory": "8Gi", "cpu": "4"}, "requests": {"cpu": "2"}},
    },
    "everything": {
        "model": {
            "source": "FunAudioLLM/Fun-ASR-Nano",
            "hub": "huggingface",
            "revision": "main",
            "family": "fun-asr-nano",
            "cache": {"pvcName": "models"},
        },
        "precision": "bf16",
        "image": {"repository": "registry.local:5000/asr", "tag": "sha256:" + "a" * 64, "pullPolicy": "Always"},
        "replicas": 3,
        "resources": {"gpus": 1, "gpuResourceName": "amd.com/gpu", "shmSize": "2Gi"},
        "autoscaling": {**KEDA, "prometheus": {**KEDA["prometheus"], "query": "sum(my_queue)"}},
        "service": {"type": "LoadBalancer", "port": 443, "annotations": {"lb": "internal"}},
        "monitoring": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
        "pod": {
            "nodeSelector": {"gpu": "mi300"},
            "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {
                "podAntiAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "weight": 100,
                            "podAffinityTerm": {
                                "topologyKey": "kubernetes.io/hostname",
                                "labelSelector": {"matchLabels": {"a": "b"}},
                            },
                        }
                    ]
                }
            },
            "priorityClassName": "high",
            "imagePullSecrets": [{"name": "regcred"}],
            "serviceAccountName": "asr",
            "env": [
                {"name": "EXTRA", "value": "1"},
                {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
            ],
            "annotations": {"team": "speech"},
            "labels": {"team": "speech", "app.kubernetes.io/name": "not-this"},
        },
    },
    "hpa": {"model": {"source": "iic/SenseVoiceSmall"}, "replicas": 5, "autoscaling": HPA},
    "keda-to-zero-hub": {"model": {"source": "iic/SenseVoiceSmall"}, "autoscaling": {**KEDA, "minReplicas": 0}},
}


def asr_for(spec: dict[str, Any], name: str = "asr") -> ASR:
    return ASR(name=name, namespace=NS, spec=parse_spec(spec))


def all_manifests() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for key, spec in SPECS.items():
        asr = asr_for(spec)
        out += [(key, m) for m in desired_children(asr)[0]]
        # Every builder, even for objects this spec would not create.
        out += [(key, build_pdb(asr)), (key, build_hpa(asr)), (key, build_servicemonitor(asr))]
    return out


MANIFESTS = all_manifests()
CUSTOM_API_VERSIONS = ("keda.sh/v1alpha1", "http.keda.sh/v1alpha1", "monitoring.coreos.com/v1")
CORE = [(k, m) for k, m in MANIFESTS if m["apiVersion"] not in CUSTOM_API_VERSIONS]
CUSTOM = [(k, m) for k, m in MANIFESTS if (k, m) not in CORE]


@pytest.mark.parametrize("version", ["1.30", "1.33"])
@pytest.mark.parametrize(("key", "manifest"), CORE, ids=[f"{k}-{m['kind']}" for k, m in CORE])
def test_core_manifests_validate(key: str, manifest: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(manifest, version, strict=True)


_STR = {"type": "string"}
_META = {
    "type": "object",
    "required": ["name", "namespace", "labels"],
    "properties": {"name": _STR, "namespace": _STR, "labels": {"type": "object", "additionalProperties": _STR}},
}
PROMETHEUS_TRIGGER = {
    "type": "object",
    "required": ["type", "metadata"],
    "additionalProperties": False,
    "properties": {
        "type": {"const": "prometheus"},
        "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
        "metadata": {
            "type": "object",
            "required": ["serverAddress", "query", "threshold"],
            "additionalProperties": False,
            # KEDA trigger metadata values are all strings.
            "properties": {
                "serverAddress": {"type": "string", "pattern": "^https?://"},
                "query": {"type": "string", "minLength": 1},
                "threshold": {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?$"},
                "ignoreNullValues": {"enum": ["true", "false"]},
            },
        },
    },
}
# KEDA's external-push trigger as KEDA's HTTP add-on documents it (docs/operate.md: scalerAddress + the
# HTTPScaledObject's name, for a ScaledObject the add-on does not write itself).
EXTERNAL_PUSH_TRIGGER = {
    "type": "object",
    "required": ["type", "metadata"],
    "additionalProperties": False,
    "properties": {
        "type": {"const": "external-push"},
        "metadata": {
            "type": "object",
            "required": ["scalerAddress", "httpScaledObject"],
            "additionalProperties": False,
            "properties": {"scalerAddress": {"type": "string", "pattern": "^[^:/]+:[0-9]+$"}, "httpScaledObject": _STR},
        },
    },
}
_DURATION = {"type": "string", "pattern": "^[0-9]+s$"}
# http.keda.sh/v1alpha1 HTTPScaledObject (KEDA HTTP add-on v0.12.0, config/crd/bases), the fields used.
HTTPSCALEDOBJECT_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "http.keda.sh/v1alpha1"},
        "kind": {"const": "HTTPScaledObject"},
        "metadata": {**_META, "properties": {**_META["properties"], "annotations": {"type": "object"}}},
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef"],
            "additionalProperties": False,
            "properties": {
                "hosts": {"type": "array", "items": _STR, "minItems": 1},
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["service"],
                    "additionalProperties": False,
                    "properties": {
                        "apiVersion": _STR,
                        "kind": _STR,
                        "name": _STR,
                        "service": _STR,
                        "port": {"type": "integer"},
                    },
                },
                "replicas": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}},
                },
                "scalingMetric": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "concurrency": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {"targetValue": {"type": "integer"}},
                        }
                    },
                },
                "scaledownPeriod": {"type": "integer"},
                "timeouts": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"conditionWait": _DURATION, "responseHeader": _DURATION},
                },
            },
        },
    },
}
# The fields of keda.sh/v1alpha1 ScaledObject (https://keda.sh/docs/2.16/reference/scaledobject-spec/) and the
# prometheus scaler (https://keda.sh/docs/2.16/scalers/prometheus/) that the operator uses; unknown = error.
SCALEDOBJECT_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": _META,
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {"apiVersion": _STR, "kind": _STR, "name": _STR},
                },
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "initialCooldownPeriod": {"type": "integer", "minimum": 0},
                "advanced": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "horizontalPodAutoscalerConfig": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {"name": _STR, "behavior": {"type": "object"}},
                        }
                    },
                },
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"oneOf": [PROMETHEUS_TRIGGER, EXTERNAL_PUSH_TRIGGER]},
                },
            },
        },
    },
}
# monitoring.coreos.com/v1 ServiceMonitor (prometheus-operator API reference), the fields used.
SERVICEMONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": _META,
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {
                    "type": "object",
                    "properties": {"matchLabels": {"type": "object", "additionalProperties": _STR}},
                },
                "namespaceSelector": {
                    "type": "object",
                    "properties": {"matchNames": {"type": "array", "items": _STR}},
                },
                "podTargetLabels": {"type": "array", "items": _STR},
                "endpoints": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": _STR,
                            "path": _STR,
                            "scheme": {"enum": ["http", "https"]},
                            "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                        },
                    },
                },
            },
        },
    },
}


@pytest.mark.parametrize(("key", "manifest"), CUSTOM, ids=[f"{k}-{m['kind']}" for k, m in CUSTOM])
def test_custom_kinds_match_their_documented_fields(key: str, manifest: dict[str, Any]) -> None:
    schema = {
        "ScaledObject": SCALEDOBJECT_SCHEMA,
        "HTTPScaledObject": HTTPSCALEDOBJECT_SCHEMA,
        "ServiceMonitor": SERVICEMONITOR_SCHEMA,
    }[manifest["kind"]]
    jsonschema.validate(manifest, schema)


@pytest.mark.parametrize(("key", "manifest"), MANIFESTS, ids=[f"{k}-{m['kind']}" for k, m in MANIFESTS])
def test_every_child_carries_the_standard_labels(key: str, manifest: dict[str, Any]) -> None:
    labels = manifest["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "asr-inference"
    assert labels["app.kubernetes.io/instance"] == "asr"
    assert labels["app.kubernetes.io/managed-by"] == "asr-operator"
    assert labels["app.kubernetes.io/part-of"] == "asr-platform"
    assert labels["app.kubernetes.io/component"]
    assert manifest["metadata"]["namespace"] == NS


def test_builders_are_pure() -> None:
    asr = asr_for(SPECS["everything"])
    assert desired_children(asr) == desired_children(asr)
    assert json.dumps(build_deployment(asr), sort_keys=True) == json.dumps(build_deployment(asr), sort_keys=True)


# --- ConfigMap -----------------------------------------------------------------------------------------------


def test_configmap_carries_every_server_setting() -> None:
    cm = build_configmap(asr_for(SPECS["sensevoice-gpu-keda"]))
    assert cm["metadata"]["name"] == "asr-config"
    data = cm["data"]
    assert data["ASR_MODEL"] == "iic/SenseVoiceSmall"
    assert data["ASR_HUB"] == "modelscope"
    assert data["ASR_FAMILY"] == "sensevoice"
    assert data["ASR_DEVICE"] == "cuda" and data["ASR_PRECISION"] == "fp16"
    assert data["ASR_MAX_BATCH_SIZE"] == "32" and data["ASR_MAX_WAIT_MS"] == "15"
    assert data["ASR_MAX_BATCH_AUDIO_S"] == "960" and data["ASR_MAX_QUEUE_SIZE"] == "512"
    assert data["ASR_MAX_AUDIO_S"] == "7200" and data["ASR_MAX_UPLOAD_MB"] == "200"
    assert data["ASR_REQUEST_TIMEOUT_S"] == "180"
    assert data["ASR_LOG_LEVEL"] == "info" and data["ASR_LOG_FORMAT"] == "json"
    assert data["ASR_LOG_FILE"] == "/var/log/asr/server.log"
    assert data["ASR_LOG_MAX_BYTES"] == str(100 * 1024 * 1024) and data["ASR_LOG_BACKUP_COUNT"] == "3"
    assert data["ASR_PORT"] == "8000"
    # the image's locations (inference/Dockerfile ENV): hub downloads under /models/cache
    assert data["MODELSCOPE_CACHE"] == "/models/cache/modelscope" and data["HF_HOME"] == "/models/cache/huggingface"
    assert all(isinstance(v, str) for v in data.values())


def test_configmap_carries_the_queue_wait_budget() -> None:
    spec = copy.deepcopy(SPECS["sensevoice-gpu-keda"])
    assert build_configmap(asr_for(spec))["data"]["ASR_MAX_QUEUE_WAIT_S"] == "0"  # default: refuse by count only
    spec.setdefault("batching", {})["maxQueueWaitSeconds"] = 2.5
    assert build_configmap(asr_for(spec))["data"]["ASR_MAX_QUEUE_WAIT_S"] == "2.5"


def test_streaming_settings_reach_the_server() -> None:
    spec = copy.deepcopy(SPECS["sensevoice-gpu-keda"])
    data = build_configmap(asr_for(spec))["data"]
    assert (data["ASR_STREAM_MAX_SESSIONS"], data["ASR_STREAM_IDLE_TIMEOUT_S"]) == ("100", "60")
    assert data["ASR_STREAM_PARTIAL_INTERVAL_MS"] == "500"
    spec["streaming"] = {"maxSessions": 8, "idleTimeoutSeconds": 12.5, "partialIntervalMs": 0}
    data = build_configmap(asr_for(spec))["data"]
    assert (data["ASR_STREAM_MAX_SESSIONS"], data["ASR_STREAM_IDLE_TIMEOUT_S"]) == ("8", "12.5")
    assert data["ASR_STREAM_PARTIAL_INTERVAL_MS"] == "0"


def test_max_length_ratio_reaches_the_server() -> None:
    spec = copy.deepcopy(SPECS["sensevoice-gpu-keda"])
    assert build_configmap(asr_for(spec))["data"]["ASR_MAX_LENGTH_RATIO"] == "4"  # default: the server's own
    spec.setdefault("batching", {})["maxLengthRatio"] = 0
    assert build_configmap(asr_for(spec))["data"]["ASR_MAX_LENGTH_RATIO"] == "0"


def test_configmap_values_parse_with_the_servers_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The env-var contract: every ASR_* value is accepted by asr_inference.config.Settings."""
    from asr_inference import config

    for key, spec in SPECS.items():
        data = build_configmap(asr_for(spec))["data"]
        for name in list(data):
            if not name.startswith("ASR_"):
                continue
            assert name[4:].lower() in config.Settings.model_fields, f"{key}: {name} is no server setting"
        for name, value in data.items():
            monkeypatch.setenv(name, value)
        settings = config.Settings()
        assert str(settings.log_file) == data["ASR_LOG_FILE"]
        assert settings.request_timeout_s == float(data["ASR_REQUEST_TIMEOUT_S"])
        for name in data:
            monkeypatch.delenv(name)


def test_demo_model_leaves_asr_model_unset() -> None:
    data = build_configmap(asr_for(SPECS["demo-cpu"]))["data"]
    assert "ASR_MODEL" not in data and "ASR_HUB" not in data and "ASR_MODEL_REVISION" not in data
    assert data["ASR_DEVICE"] == "cpu"


def test_local_path_uses_hub_local_and_revision_is_passed() -> None:
    assert build_configmap(asr_for(SPECS["local-hostpath"]))["data"]["ASR_HUB"] == "local"
    data = build_configmap(asr_for(SPECS["everything"]))["data"]
    assert data["ASR_HUB"] == "huggingface" and data["ASR_MODEL_REVISION"] == "main"


# --- Deployment ----------------------------------------------------------------------------------------------


def _container(dep: dict[str, Any]) -> dict[str, Any]:
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    return dict(container)


def _volumes(dep: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}


def test_deployment_container_probes_ports_and_config() -> None:
    asr = asr_for(SPECS["sensevoice-gpu-keda"])
    dep = build_deployment(asr)
    c = _container(dep)
    assert c["name"] == "asr-serve" and c["image"] == "ghcr.io/asr-platform/asr-inference:0.1.0"
    assert c["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert c["envFrom"] == [{"configMapRef": {"name": "asr-config"}}]
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http", "scheme": "HTTP"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http", "scheme": "HTTP"}
    startup = c["startupProbe"]
    assert startup["httpGet"]["port"] == "http"
    # A hub model downloads at start: at least 30 minutes before the kubelet gives up.
    assert startup["failureThreshold"] * startup["periodSeconds"] >= 30 * 60


def test_demo_model_startup_is_shorter_but_still_generous() -> None:
    startup = _container(build_deployment(asr_for(SPECS["demo-cpu"])))["startupProbe"]
    assert 5 * 60 <= startup["failureThreshold"] * startup["periodSeconds"] < 30 * 60


def test_graceful_shutdown_outlasts_drain_and_request_timeout() -> None:
    spec = SPECS["sensevoice-gpu-keda"]
    asr = asr_for(spec)
    dep = build_deployment(asr)
    pod = dep["spec"]["template"]["spec"]
    pre_stop = _container(dep)["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep" and int(pre_stop[1]) >= 3
    drain = float(build_configmap(asr)["data"]["ASR_DRAIN_TIMEOUT_S"])
    timeout = spec["limits"]["requestTimeoutSeconds"]
    assert drain >= timeout
    assert pod["terminationGracePeriodSeconds"] >= int(pre_stop[1]) + drain
    assert pod["terminationGracePeriodSeconds"] == termination_grace_s(asr.spec)


def test_gpu_limits_follow_device_and_count() -> None:
    gpu = _container(build_deployment(asr_for(SPECS["sensevoice-gpu-keda"])))["resources"]
    assert gpu["limits"]["nvidia.com/gpu"] == "1"
    assert gpu["limits"]["memory"] == "24Gi" and gpu["requests"] == {"cpu": "4", "memory": "12Gi"}
    amd = _container(build_deployment(asr_for(SPECS["everything"])))["resources"]
    assert amd["limits"]["amd.com/gpu"] == "1" and "nvidia.com/gpu" not in amd["limits"]
    default = _container(build_deployment(asr_for(SPECS["minimal-hub"])))["resources"]
    assert default["limits"]["nvidia.com/gpu"] == "1"  # device defaults to cuda with one GPU
    cpu = _container(build_deployment(asr_for(SPECS["demo-cpu"])))["resources"]
    assert not any("gpu" in k for k in cpu.get("limits", {}))


def test_security_context_is_locked_down() -> None:
    dep = build_deployment(asr_for(SPECS["demo-cpu"]))
    pod = dep["spec"]["template"]["spec"]
    sc = _container(dep)["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False


@pytest.mark.parametrize(("size_mb", "files"), [(50, 5), (1, 1), (100, 3), (1024, 50)])
def test_log_volume_fits_the_rotation(size_mb: int, files: int) -> None:
    spec = {"model": {"source": "builtin:demo"}, "device": "cpu",
            "logging": {"rotation": {"maxSizeMB": size_mb, "maxFiles": files}}}  # fmt: skip
    asr = asr_for(spec)
    dep = build_deployment(asr)
    logs = _volumes(dep)["logs"]["emptyDir"]["sizeLimit"]
    assert logs.endswith("Mi")
    assert int(logs[:-2]) > size_mb * (files + 1)  # all files at their largest, plus headroom
    assert int(logs[:-2]) == log_volume_size_mi(asr.spec)
    mount = {m["name"]: m["mountPath"] for m in _container(dep)["volumeMounts"]}
    data = build_configmap(asr)["data"]
    assert data["ASR_LOG_FILE"].startswith(mount["logs"] + "/")
    assert data["ASR_LOG_MAX_BYTES"] == str(size_mb * 1024 * 1024) and data["ASR_LOG_BACKUP_COUNT"] == str(files)


def test_writable_paths_are_volumes_and_shm_is_memory() -> None:
    dep = build_deployment(asr_for(SPECS["sensevoice-gpu-keda"]))
    vols = _volumes(dep)
    mounts = {m["mountPath"]: m["name"] for m in _container(dep)["volumeMounts"]}
    assert set(mounts) == {"/models", "/var/log/asr", "/dev/shm", "/tmp"}
    assert vols[mounts["/dev/shm"]]["emptyDir"] == {"medium": "Memory", "sizeLimit": "4Gi"}
    assert "emptyDir" in vols[mounts["/tmp"]]
    assert vols[mounts["/models"]]["persistentVolumeClaim"] == {"claimName": "asr-model-cache"}


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("local-hostpath", {"hostPath": {"path": "/srv/asr-models", "type": "Directory"}}),  # never made root-owned
        ("paraformer-hpa", {"emptyDir": {"sizeLimit": "10Gi"}}),
        ("memory-cache-cpu-bf16", {"emptyDir": {"sizeLimit": "2Gi", "medium": "Memory"}}),
        ("minimal-hub", {"emptyDir": {"sizeLimit": "20Gi"}}),
        ("everything", {"persistentVolumeClaim": {"claimName": "models"}}),
    ],
)
def test_model_cache_volume(key: str, expected: dict[str, Any]) -> None:
    vol = _volumes(build_deployment(asr_for(SPECS[key])))["model-cache"]
    assert {k: v for k, v in vol.items() if k != "name"} == expected


@pytest.mark.parametrize(
    ("key", "strategy", "toleration"),
    [
        ("paraformer-hpa", {"maxSurge": 0, "maxUnavailable": 1}, "nvidia.com/gpu"),
        ("memory-cache-cpu-bf16", {"maxSurge": 1, "maxUnavailable": 0}, None),
    ],
)
def test_gpu_pods_tolerate_the_gpu_taint_and_roll_without_surging(
    key: str, strategy: dict[str, int], toleration: str | None
) -> None:
    """On a full GPU pool a surge pod never schedules: GPU Deployments replace one pod at a time (the PDB allows
    the same one down); GPU nodes are tainted with the resource name, which GPU pods tolerate."""
    dep = build_deployment(asr_for(SPECS[key]))
    assert dep["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": strategy}
    keys = [t["key"] for t in dep["spec"]["template"]["spec"].get("tolerations", [])]
    assert keys == ([toleration] if toleration else [])
    startup = _container(dep)["startupProbe"]
    budget = startup["periodSeconds"] * startup["failureThreshold"]
    assert dep["spec"]["progressDeadlineSeconds"] > budget  # a slow model load is not "failed to progress"


def test_pod_settings_are_passed_through() -> None:
    dep = build_deployment(asr_for(SPECS["everything"]))
    tpl = dep["spec"]["template"]
    pod = tpl["spec"]
    assert pod["nodeSelector"] == {"gpu": "mi300"}
    assert pod["tolerations"] == [  # the spec's, then its GPU resource's taint (amd.com/gpu in this spec)
        {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "amd.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    ]
    assert pod["affinity"]["podAntiAffinity"]
    assert pod["priorityClassName"] == "high" and pod["serviceAccountName"] == "asr"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    env = {e["name"]: e for e in _container(dep)["env"]}
    assert env["EXTRA"]["value"] == "1" and env["SECRET"]["valueFrom"]["secretKeyRef"]["key"] == "k"
    assert tpl["metadata"]["labels"]["team"] == "speech"
    assert tpl["metadata"]["labels"]["app.kubernetes.io/name"] == "asr-inference"  # ours win
    ann = tpl["metadata"]["annotations"]
    assert ann["team"] == "speech"
    assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/port"] == "8000"
    assert ann["prometheus.io/path"] == "/metrics"
    c = _container(dep)
    assert c["image"] == "registry.local:5000/asr@sha256:" + "a" * 64 and c["imagePullPolicy"] == "Always"


def test_selector_is_stable_and_matches_the_pods() -> None:
    dep = build_deployment(asr_for(SPECS["everything"]))
    sel = dep["spec"]["selector"]["matchLabels"]
    assert sel == {"app.kubernetes.io/name": "asr-inference", "app.kubernetes.io/instance": "asr"}
    assert sel.items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert build_service(asr_for(SPECS["everything"]))["spec"]["selector"] == sel


def test_config_change_rolls_the_pods_and_other_changes_do_not_touch_the_checksum() -> None:
    base = SPECS["sensevoice-gpu-keda"]
    changed = copy.deepcopy(base)
    changed["batching"]["maxBatchSize"] = 8
    unrelated = copy.deepcopy(base)
    unrelated["pod"]["nodeSelector"] = {"x": "y"}

    def checksum(spec: dict[str, Any]) -> str:
        return str(build_deployment(asr_for(spec))["spec"]["template"]["metadata"]["annotations"][CHECKSUM_ANNOTATION])

    assert len(checksum(base)) == 64
    assert checksum(changed) != checksum(base)
    assert checksum(unrelated) == checksum(base)


@pytest.mark.parametrize(
    ("replicas", "autoscaling", "expected"),
    [
        (3, {"enabled": False}, 3),
        (0, {"enabled": False}, 0),
        (1, HPA, 2),  # clamped up to minReplicas
        (5, HPA, 5),
        (20, HPA, 8),  # clamped down to maxReplicas
    ],
)
def test_initial_replicas(replicas: int, autoscaling: dict[str, Any], expected: int) -> None:
    spec = {"model": {"source": "x/y"}, "replicas": replicas, "autoscaling": autoscaling}
    assert build_deployment(asr_for(spec))["spec"]["replicas"] == expected


# --- Service, PDB, autoscalers, ServiceMonitor --------------------------------------------------------------


def test_service() -> None:
    svc = build_service(asr_for(SPECS["everything"]))
    assert svc["metadata"]["name"] == "asr"
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["spec"]["ports"][0]["port"] == 443 and svc["spec"]["ports"][0]["targetPort"] == "http"
    assert svc["metadata"]["annotations"] == {"lb": "internal"}
    assert asr_for(SPECS["everything"]).endpoint == "http://asr.speech.svc:443"


@pytest.mark.parametrize(
    ("spec_changes", "wants_pdb"),
    [({"replicas": 1}, False), ({"replicas": 2}, True), ({"replicas": 1, "autoscaling": HPA}, True)],
)
def test_pdb_only_with_more_than_one_pod(spec_changes: dict[str, Any], wants_pdb: bool) -> None:
    asr = asr_for({"model": {"source": "x/y"}, **spec_changes})
    present, absent = desired_children(asr)
    kinds = [m["kind"] for m in present]
    assert ("PodDisruptionBudget" in kinds) is wants_pdb
    assert (("PodDisruptionBudget", "asr") in absent) is not wants_pdb
    assert build_pdb(asr)["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": asr.selector}}


def test_keda_scaledobject() -> None:
    asr = asr_for(SPECS["sensevoice-gpu-keda"], name="sv")
    so = build_scaledobject(asr)
    spec = so["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "sv"}
    assert spec["minReplicaCount"] == 2 and spec["maxReplicaCount"] == 10
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus"
    meta = trigger["metadata"]
    assert meta["serverAddress"] == "http://prometheus-operated.monitoring.svc:9090"
    assert meta["query"] == (
        'sum(max by (pod) (asr_load{namespace="speech",'
        'app_kubernetes_io_name="asr-inference",app_kubernetes_io_instance="sv"}))'
    )
    assert meta["threshold"] == "16" and meta["ignoreNullValues"] == "false"
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 600
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0


def test_scale_to_zero_through_the_http_addon() -> None:
    asr = asr_for(SPECS["demo-scale-to-zero"], name="idle")
    present, absent = desired_children(asr)
    kinds = [m["kind"] for m in present]
    # the HTTPScaledObject exists before the ScaledObject whose push trigger names it
    assert kinds.index("HTTPScaledObject") < kinds.index("ScaledObject")
    assert "HorizontalPodAutoscaler" not in kinds and ("HTTPScaledObject", "idle") not in absent
    so = next(m for m in present if m["kind"] == "ScaledObject")["spec"]
    assert so["minReplicaCount"] == 0 and so["maxReplicaCount"] == 3
    # the first pod loads its model and stays one cooldown before the first scale to zero
    assert so["cooldownPeriod"] == so["initialCooldownPeriod"] == 300
    prometheus, push = so["triggers"]
    assert prometheus["metadata"]["ignoreNullValues"] == "true"  # no pods, no series: 0, not an error
    assert push == {
        "type": "external-push",
        "metadata": {"scalerAddress": "keda-add-ons-http-external-scaler.keda:9090", "httpScaledObject": "idle"},
    }
    hso = next(m for m in present if m["kind"] == "HTTPScaledObject")
    assert hso["metadata"]["name"] == "idle"
    assert hso["metadata"]["annotations"] == {"httpscaledobject.keda.sh/skip-scaledobject-creation": "true"}
    spec = hso["spec"]
    assert spec["hosts"] == ["idle.speech", "idle.speech.svc", "idle.speech.svc.cluster.local"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "idle", "service": "idle", "port": 8000
    }  # fmt: skip
    assert spec["replicas"] == {"min": 0, "max": 3} and spec["scaledownPeriod"] == 300
    # held for a local model's whole startup budget (60 probes x 10 s), answered within the request timeout
    assert spec["timeouts"] == {"conditionWait": "600s", "responseHeader": "120s"}


def test_scale_to_zero_extra_hosts_and_hub_startup_budget() -> None:
    auto = {**KEDA, "minReplicas": 0, "httpAddon": {"hosts": ["asr.example.com", "idle.speech"]}}
    spec = build_http_scaled_object(asr_for({"model": {"source": "iic/x"}, "autoscaling": auto}, name="idle"))["spec"]
    assert spec["hosts"][3:] == ["asr.example.com"]  # no duplicate of the own names
    assert spec["timeouts"]["conditionWait"] == "1800s"  # a hub model downloads first


def test_min_one_has_no_http_scaled_object() -> None:
    present, absent = desired_children(asr_for({"model": {"source": "x/y"}, "autoscaling": KEDA}))
    assert "HTTPScaledObject" not in {m["kind"] for m in present}
    assert ("HTTPScaledObject", "asr") in absent
    (trigger,) = build_scaledobject(asr_for({"model": {"source": "x/y"}, "autoscaling": KEDA}))["spec"]["triggers"]
    assert trigger["metadata"]["ignoreNullValues"] == "false"
    assert (
        "initialCooldownPeriod"
        not in build_scaledobject(asr_for({"model": {"source": "x/y"}, "autoscaling": KEDA}))["spec"]
    )


def test_keda_query_override() -> None:
    so = build_scaledobject(asr_for(SPECS["everything"]))
    assert so["spec"]["triggers"][0]["metadata"]["query"] == "sum(my_queue)"


def test_hpa_on_queue_depth() -> None:
    hpa = build_hpa(asr_for(SPECS["paraformer-hpa"], name="pf"))
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "pf"}
    assert spec["minReplicas"] == 1 and spec["maxReplicas"] == 6
    assert spec["metrics"] == [
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": "asr_load"},
                "target": {"type": "AverageValue", "averageValue": "8"},
            },
        }
    ]
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    assert spec["behavior"]["scaleUp"]["stabilizationWindowSeconds"] == 0


@pytest.mark.parametrize(
    ("autoscaling", "present", "absent"),
    [
        ({"enabled": False}, set(), {"ScaledObject", "HorizontalPodAutoscaler"}),
        (KEDA, {"ScaledObject"}, {"HorizontalPodAutoscaler"}),
        (HPA, {"HorizontalPodAutoscaler"}, {"ScaledObject"}),
    ],
)
def test_one_autoscaler_at_most_and_the_other_is_removed(
    autoscaling: dict[str, Any], present: set[str], absent: set[str]
) -> None:
    wanted, unwanted = desired_children(asr_for({"model": {"source": "x/y"}, "autoscaling": autoscaling}))
    kinds = {m["kind"] for m in wanted}
    assert kinds & {"ScaledObject", "HorizontalPodAutoscaler"} == present
    assert {k for k, _ in unwanted} & {"ScaledObject", "HorizontalPodAutoscaler"} == absent


def test_servicemonitor() -> None:
    asr = asr_for(SPECS["sensevoice-gpu-keda"])
    sm = build_servicemonitor(asr)
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s", "scheme": "http"}]
    assert sm["spec"]["selector"]["matchLabels"] == asr.selector
    # the labels the autoscaler's query matches on are kept on the series
    assert sm["spec"]["podTargetLabels"] == ["app.kubernetes.io/name", "app.kubernetes.io/instance"]
    assert "ServiceMonitor" in {m["kind"] for m in desired_children(asr)[0]}
    assert ("ServiceMonitor", "asr") in desired_children(asr_for(SPECS["demo-cpu"]))[1]


@pytest.mark.parametrize(
    ("autoscaling", "service_monitor", "wanted"),
    [
        ({"enabled": False}, {}, False),
        (KEDA, {}, True),  # the autoscaler's query needs the pods scraped: on by default
        (HPA, {}, True),
        (KEDA, {"enabled": False}, False),  # the user's Prometheus scrapes by annotations
        ({"enabled": False}, {"enabled": True}, True),
    ],
)
def test_scraping_follows_autoscaling_unless_set(
    autoscaling: dict[str, Any], service_monitor: dict[str, Any], wanted: bool
) -> None:
    spec = {"model": {"source": "x/y"}, "autoscaling": autoscaling, "monitoring": {"serviceMonitor": service_monitor}}
    present, absent = desired_children(asr_for(spec))
    assert ("ServiceMonitor" in {m["kind"] for m in present}) is wanted
    assert (("ServiceMonitor", "asr") in absent) is not wanted


def test_queue_query_matches_pods_of_a_long_name_by_label() -> None:
    name = "a-speech-recognition-service-with-a-rather-long-name-x"  # 54 chars: its pods' names are cut short
    query = build_scaledobject(asr_for(SPECS["sensevoice-gpu-keda"], name=name))["spec"]["triggers"][0]
    assert f'app_kubernetes_io_instance="{name}"' in query["metadata"]["query"]
    assert "pod=~" not in query["metadata"]["query"]


# --- images --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("ghcr.io/a/b:1.0", ("ghcr.io/a/b", "1.0")),
        ("registry:5000/a/b", ("registry:5000/a/b", None)),
        ("registry:5000/a/b:2", ("registry:5000/a/b", "2")),
        ("a/b@sha256:abc", ("a/b", "sha256:abc")),
    ],
)
def test_split_image(image: str, expected: tuple[str, str | None]) -> None:
    assert split_image(image) == expected


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (None, "op/default:9"),
        ({"tag": "1.2"}, "op/default:1.2"),
        ({"repository": "my/asr"}, "my/asr:9"),
        ({"repository": "my/asr", "tag": "sha256:ff"}, "my/asr@sha256:ff"),
    ],
)
def test_image_defaults_come_from_the_operator(image: dict[str, str] | None, expected: str) -> None:
    spec = ASRDeploymentSpec.model_validate({"model": {"source": "x"}, **({"image": image} if image else {})})
    assert resolve_image(spec, "op/default:9") == expected


# --- /tmp: sized from the upload limits, and the server told the budget ---------------------------------------


def _tmp_and_budget(spec: dict[str, Any]) -> tuple[str, str]:
    asr = asr_for(spec)
    volumes = {v["name"]: v for v in build_deployment(asr)["spec"]["template"]["spec"]["volumes"]}
    return volumes["tmp"]["emptyDir"]["sizeLimit"], build_configmap(asr)["data"]["ASR_SCRATCH_MB"]


def test_tmp_holds_four_worst_case_uploads_and_the_server_knows_its_budget() -> None:
    # defaults: 100 MB uploads, 3600 s audio → body + copy 200 Mi + 3600 s x 64 kB/s ≈ 220 Mi → 420 Mi per upload
    assert _tmp_and_budget({"model": {"source": "x/y"}}) == ("1744Mi", "1680")
    # short audio only: the decoded part is capped by maxAudioSeconds
    limits = {"maxUploadMB": 10, "maxAudioSeconds": 60}
    assert _tmp_and_budget({"model": {"source": "x/y"}, "limits": limits}) == (f"{4 * 24 + 64}Mi", str(4 * 24))
    assert _tmp_and_budget({"model": {"source": "x/y"}, "limits": {"scratchSize": "10Gi"}}) == ("10Gi", "10176")


def test_scratch_smaller_than_one_upload_is_refused() -> None:
    with pytest.raises(InvalidSpec, match=r"limits.scratchSize 256Mi is below one upload's worst case \(484Mi"):
        parse_spec({"model": {"source": "x/y"}, "limits": {"scratchSize": "256Mi"}})


@pytest.mark.parametrize(("upload_mb", "audio_s"), [(100, 3600), (1, 3600), (4096, 60), (25, 86400)])
def test_operator_and_server_agree_on_one_uploads_scratch(upload_mb: float, audio_s: float) -> None:
    server_mi = request_scratch_bytes(int(upload_mb * 2**20), audio_s) / 2**20
    assert request_scratch_mi(upload_mb, audio_s) == pytest.approx(server_mi, abs=1)


def test_runtime_class_and_fs_group_change_policy() -> None:
    spec = {"model": {"source": "x/y"}, "pod": {"runtimeClassName": "nvidia"}}
    pod = build_deployment(asr_for(spec))["spec"]["template"]["spec"]
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"  # no chown of a big cache each start
    assert "runtimeClassName" not in build_deployment(asr_for({"model": {"source": "x/y"}}))["spec"]["template"]["spec"]
