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
    """Port of kopf's liveness endpoint http://0.0.0.0:<port>/healthz; 0 = off."""

    metrics_port: int = Field(default=9090, ge=0, le=65535)
    """Port of the Prometheus metrics endpoint (asr_operator_reconcile_*); 0 = off."""

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Operator log level."""

    resync_interval_s: float = Field(default=60.0, gt=0)
    """Period of the drift-repair timer per ASRDeployment (children are watched too: this is a backstop)."""

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
    def liveness_endpoint(self) -> str | None:
        return f"http://0.0.0.0:{self.liveness_port}/healthz" if self.liveness_port else None
