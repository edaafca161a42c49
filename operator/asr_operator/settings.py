"""Operator settings: env vars `ASR_OPERATOR_<NAME>` (the Helm chart sets exactly these names)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_INFERENCE_IMAGE = "ghcr.io/asr-platform/asr-inference:0.1.0"


class OperatorSettings(BaseSettings):
    """Settings of asr-operator, read from `ASR_OPERATOR_*` env vars."""

    model_config = SettingsConfigDict(env_prefix="ASR_OPERATOR_", extra="ignore")

    watch_namespaces: str = ""
    """Comma-separated namespaces to watch; empty = cluster-wide."""

    inference_image: str = DEFAULT_INFERENCE_IMAGE
    """Inference server image (`repo:tag` or `repo@sha256:...`) for ASRDeployments without `spec.image`."""

    peering_name: str = ""
    """kopf peering object for HA (several operator replicas, one active); empty = standalone."""

    liveness_port: int = Field(default=8080, ge=0, le=65535)
    """Port of kopf's liveness endpoint http://<any address>:<port>/healthz; 0 = off."""

    metrics_port: int = Field(default=9090, ge=0, le=65535)
    """Port of the Prometheus metrics endpoint (asr_operator_reconcile_*); 0 = off."""

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Operator log level."""

    resync_interval_s: float = Field(default=60.0, gt=0)
    """Period of the drift-repair timer per ASRDeployment (children are watched too: this is a backstop)."""

    pod_ip: str = Field(default="", validation_alias="POD_IP")
    """The pod's primary IP (`POD_IP`, from status.podIP): the endpoints listen on its family's any-address, which
    is where the kubelet probes and Prometheus scrapes (IPv6 on IPv6-only and IPv6-first clusters)."""

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, v: object) -> object:
        return v.strip().lower() if isinstance(v, str) else v

    @property
    def namespaces(self) -> list[str]:
        return [ns.strip() for ns in self.watch_namespaces.split(",") if ns.strip()]

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

    @property
    def bind_address(self) -> str:
        """`::` when the pod's IP is IPv6, else 0.0.0.0. (kopf's aiohttp listener on `::` is IPv6-only, so the
        family must be the one the pod is reached on.)"""
        return "::" if ":" in self.pod_ip else "0.0.0.0"

    @property
    def liveness_endpoint(self) -> str | None:
        host = "[::]" if self.bind_address == "::" else self.bind_address
        return f"http://{host}:{self.liveness_port}/healthz" if self.liveness_port else None
