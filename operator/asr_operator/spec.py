"""The typed ASRDeployment spec: pydantic models mirroring the CRD schema, with the same defaults.

The CRD's structural defaults are applied by the API server; the same defaults here make the operator behave
the same on objects read before defaulting (and in unit tests). `tests/operator` checks that both agree.
`semantic_errors()` holds the checks a schema or a CEL rule cannot express (quantities compared with each
other); they end reconciliation with a PermanentError.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from . import quantity
from .scratch import minimum_scratch_mi

GROUP = "asr-platform.io"
VERSION = "v1alpha1"
PLURAL = "asrdeployments"
KIND = "ASRDeployment"
DEMO_SOURCE = "builtin:demo"

_QUANTITY = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"
_CPU = r"^[0-9]+(\.[0-9]+)?m?$"


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class EmptyDirCache(_Model):
    size_limit: str = Field(default="20Gi", pattern=_QUANTITY)
    medium: Literal["", "Memory"] = ""


class ModelCache(_Model):
    pvc_name: str | None = Field(default=None, min_length=1, max_length=253)
    host_path: str | None = Field(default=None, min_length=2, max_length=1024, pattern=r"^/")
    empty_dir: EmptyDirCache | None = None


class ModelSpec(_Model):
    source: str = Field(min_length=1, max_length=512)
    hub: Literal["modelscope", "huggingface", "local"] | None = None
    revision: str | None = Field(default=None, max_length=128)
    family: Literal["auto", "sensevoice", "paraformer", "fun-asr-nano", "whisper", "glm-asr"] = "auto"
    runtime: Literal["pytorch", "onnx"] = "pytorch"
    quantize: Literal["none", "int8"] = "none"
    cache: ModelCache | None = None

    @property
    def is_demo(self) -> bool:
        return self.source == DEMO_SOURCE

    @property
    def effective_hub(self) -> str:
        """The hub the server is told: explicit, else local for an absolute path, else modelscope."""
        if self.hub is not None:
            return self.hub
        return "local" if self.source.startswith("/") or self.is_demo else "modelscope"


class Batching(_Model):
    max_batch_size: int = Field(default=16, ge=1, le=1024)
    max_wait_ms: int = Field(default=10, ge=0, le=10_000)
    max_batch_audio_seconds: float = Field(default=480, ge=1, le=36_000)
    max_length_ratio: float = Field(default=4, ge=0, le=1000)
    max_queue_size: int = Field(default=256, ge=1, le=100_000)
    max_queue_wait_seconds: float = Field(default=0, ge=0, le=3600)

    @field_validator("max_length_ratio")
    @classmethod
    def _no_limit_or_at_least_one(cls, v: float) -> float:
        if 0 < v < 1:
            raise ValueError("maxLengthRatio is 0 (no limit) or at least 1")
        return v


class Streaming(_Model):
    max_sessions: int = Field(default=100, ge=0, le=100_000)
    idle_timeout_seconds: float = Field(default=60, ge=1, le=86_400)
    partial_interval_ms: int = Field(default=500, ge=0, le=60_000)


class Limits(_Model):
    max_audio_seconds: float = Field(default=3600, ge=1, le=86_400)
    max_upload_mb: float = Field(default=100, ge=1, le=4096, alias="maxUploadMB")
    request_timeout_seconds: int = Field(default=120, ge=1, le=3600)
    scratch_size: str | None = Field(default=None, pattern=_QUANTITY)  # /tmp; unset: from the upload limits


class ImageSpec(_Model):
    repository: str | None = Field(default=None, min_length=1, max_length=512)
    tag: str | None = Field(default=None, min_length=1, max_length=128)
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"


class ResourceRequests(_Model):
    cpu: str = Field(default="1", pattern=_CPU)
    memory: str = Field(default="2Gi", pattern=_QUANTITY)


class ResourceLimits(_Model):
    cpu: str | None = Field(default=None, pattern=_CPU)
    memory: str | None = Field(default="8Gi", pattern=_QUANTITY)


class Resources(_Model):
    gpus: int | None = Field(default=None, ge=0, le=16)  # the server runs one inference worker per GPU
    gpu_resource_name: str = "nvidia.com/gpu"
    requests: ResourceRequests = ResourceRequests()
    limits: ResourceLimits = ResourceLimits()
    shm_size: str = Field(default="1Gi", pattern=_QUANTITY)


class PrometheusSpec(_Model):
    server_address: str | None = Field(default=None, max_length=1024, pattern=r"^https?://")
    query: str | None = Field(default=None, max_length=4096)


class HttpAddon(_Model):
    """KEDA's HTTP add-on, for minReplicas 0: its interceptor holds requests while no pod is ready."""

    scaler_address: str = Field(default="keda-add-ons-http-external-scaler.keda:9090", min_length=1, max_length=512)
    hosts: list[str] = Field(default_factory=list, max_length=32)


class Autoscaling(_Model):
    enabled: bool = False
    engine: Literal["keda", "hpa"] = "keda"
    min_replicas: int = Field(default=1, ge=0, le=1000)
    max_replicas: int = Field(default=4, ge=1, le=1000)
    target_queue_depth: int = Field(default=8, ge=1, le=100_000)
    polling_interval_seconds: int = Field(default=15, ge=1, le=3600)
    scale_up_stabilization_seconds: int = Field(default=0, ge=0, le=3600)
    scale_down_stabilization_seconds: int = Field(default=300, ge=0, le=3600)
    prometheus: PrometheusSpec | None = None
    http_addon: HttpAddon = HttpAddon()

    @property
    def scales_to_zero(self) -> bool:
        return self.enabled and self.min_replicas == 0


class Rotation(_Model):
    max_size_mb: int = Field(default=50, ge=1, le=1024, alias="maxSizeMB")
    max_files: int = Field(default=5, ge=1, le=50)  # 0 would mean never rotate in Python: the volume fills


class Logging(_Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"
    rotation: Rotation = Rotation()


class ServiceSpec(_Model):
    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    port: int = Field(default=8000, ge=1, le=65535)
    annotations: dict[str, str] = Field(default_factory=dict)


class ServiceMonitorSpec(_Model):
    enabled: bool | None = None  # unset: follows autoscaling.enabled (the autoscaler's query needs the scrape)
    interval: str = Field(default="30s", pattern=r"^[0-9]+(ms|s|m|h)$")
    labels: dict[str, str] = Field(default_factory=dict)


class Monitoring(_Model):
    service_monitor: ServiceMonitorSpec = ServiceMonitorSpec()


class Toleration(_Model):
    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class LocalObjectReference(_Model):
    name: str


class EnvVar(_Model):
    name: str = Field(min_length=1)
    value: str | None = None
    value_from: dict[str, Any] | None = None


class PodSpec(_Model):
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    affinity: dict[str, Any] | None = None
    priority_class_name: str | None = Field(default=None, max_length=253)
    image_pull_secrets: list[LocalObjectReference] = Field(default_factory=list)
    service_account_name: str | None = Field(default=None, max_length=253)
    runtime_class_name: str | None = Field(default=None, min_length=1, max_length=253)
    env: list[EnvVar] = Field(default_factory=list)
    annotations: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)


class ASRDeploymentSpec(_Model):
    """`spec` of an ASRDeployment."""

    model: ModelSpec
    device: Literal["cuda", "cpu"] = "cuda"
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    batching: Batching = Batching()
    limits: Limits = Limits()
    streaming: Streaming = Streaming()
    image: ImageSpec | None = None
    replicas: int = Field(default=1, ge=0, le=1000)
    resources: Resources = Resources()
    autoscaling: Autoscaling = Autoscaling()
    logging: Logging = Logging()
    service: ServiceSpec = ServiceSpec()
    monitoring: Monitoring = Monitoring()
    pod: PodSpec = PodSpec()

    @property
    def service_monitor_enabled(self) -> bool:
        """A ServiceMonitor when asked for, and by default whenever autoscaling reads the pods' queue depth."""
        explicit = self.monitoring.service_monitor.enabled
        return self.autoscaling.enabled if explicit is None else explicit

    @property
    def gpus(self) -> int:
        """GPUs per pod: explicit, else 1 on cuda and 0 on cpu."""
        if self.resources.gpus is not None:
            return self.resources.gpus
        return 1 if self.device == "cuda" else 0


class InvalidSpec(ValueError):
    """The spec passes the schema but cannot work."""


def parse_spec(raw: Any) -> ASRDeploymentSpec:
    """Validate a raw `spec` mapping; InvalidSpec (with every problem) when it does not fit the model."""
    try:
        spec = ASRDeploymentSpec.model_validate(dict(raw or {}))
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'spec'}: {err['msg']}" for err in e.errors())
        raise InvalidSpec(problems) from None
    errors = cel_equivalent_errors(spec) + semantic_errors(spec)
    if errors:
        raise InvalidSpec("; ".join(errors))
    return spec


MIN_ZERO_NEEDS_KEDA = (
    "autoscaling.minReplicas 0 needs engine keda: KEDA's HTTP add-on holds the first request while a pod starts "
    "(an HPA cannot scale to zero)"
)


TRANSFORMERS_NEEDS_HF = (
    "model.family whisper or glm-asr from a hub needs model.hub huggingface (transformers checkpoints)"
)


def cel_equivalent_errors(spec: ASRDeploymentSpec) -> list[str]:
    """The CRD's CEL rules again, for objects that reached the operator without an API server checking."""
    errors: list[str] = []
    if spec.precision == "fp16" and spec.device != "cuda":
        errors.append("precision fp16 needs device cuda (on CPU use fp32 or bf16)")
    if spec.model.quantize != "none" and spec.model.runtime != "onnx":
        errors.append("model.quantize int8 needs model.runtime onnx")
    if spec.resources.gpus and spec.device != "cuda":
        errors.append("resources.gpus > 0 needs device cuda")
    if spec.device == "cuda" and spec.resources.gpus == 0:
        errors.append("device cuda needs resources.gpus >= 1 (leave it unset for 1)")
    a = spec.autoscaling
    if a.enabled and a.min_replicas > a.max_replicas:
        errors.append("autoscaling.minReplicas must be <= autoscaling.maxReplicas")
    if a.enabled and a.engine == "keda" and not (a.prometheus and a.prometheus.server_address):
        errors.append("autoscaling engine keda needs autoscaling.prometheus.serverAddress")
    if a.enabled and a.min_replicas == 0 and a.engine != "keda":
        errors.append(MIN_ZERO_NEEDS_KEDA)
    m = spec.model
    if m.hub == "local" and not m.source.startswith("/"):
        errors.append("model.hub local needs model.source to be an absolute path")
    if m.source.startswith("/") and m.hub not in (None, "local"):
        errors.append("an absolute model.source path is a local model: model.hub must be local or unset")
    if m.is_demo and m.revision is not None:
        errors.append("builtin:demo has no revision")
    if m.family in ("whisper", "glm-asr") and not m.source.startswith("/") and m.hub != "huggingface":
        errors.append(TRANSFORMERS_NEEDS_HF)
    if m.cache is not None:
        chosen = [x for x in (m.cache.pvc_name, m.cache.host_path, m.cache.empty_dir) if x is not None]
        if len(chosen) > 1:
            errors.append("set at most one of model.cache.pvcName, .hostPath, .emptyDir")
    return errors


def parse_quantity(q: str) -> Decimal:
    """A Kubernetes quantity (the subset the CRD patterns allow) as a number of base units."""
    try:
        return quantity.parse_quantity(q)
    except quantity.QuantityError as e:
        raise InvalidSpec(str(e)) from None


def semantic_errors(spec: ASRDeploymentSpec) -> list[str]:
    """What the schema cannot say: quantities that contradict each other."""
    errors: list[str] = []
    req, lim = spec.resources.requests, spec.resources.limits
    if req.memory and lim.memory and parse_quantity(req.memory) > parse_quantity(lim.memory):
        errors.append(f"resources.requests.memory {req.memory} exceeds resources.limits.memory {lim.memory}")
    if req.cpu and lim.cpu and parse_quantity(req.cpu) > parse_quantity(lim.cpu):
        errors.append(f"resources.requests.cpu {req.cpu} exceeds resources.limits.cpu {lim.cpu}")
    if lim.memory and parse_quantity(spec.resources.shm_size) >= parse_quantity(lim.memory):
        errors.append(
            f"resources.shmSize {spec.resources.shm_size} must be below resources.limits.memory {lim.memory} "
            "(/dev/shm counts against the memory limit)"
        )
    lims = spec.limits
    if lims.scratch_size:
        need = minimum_scratch_mi(lims.max_upload_mb, lims.max_audio_seconds)
        if parse_quantity(lims.scratch_size) < need * 2**20:
            errors.append(
                f"limits.scratchSize {lims.scratch_size} is below one upload's worst case ({need}Mi: twice "
                "maxUploadMB for the body and its copy, the decoded samples of maxAudioSeconds, 64Mi headroom)"
            )
    cache = spec.model.cache
    if (
        cache is not None
        and cache.empty_dir is not None
        and cache.empty_dir.medium == "Memory"
        and lim.memory
        and parse_quantity(cache.empty_dir.size_limit) >= parse_quantity(lim.memory)
    ):
        errors.append("a Memory model.cache.emptyDir must be smaller than resources.limits.memory")
    return errors
