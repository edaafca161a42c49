"""Every child of one ASRDeployment, in apply order, and the kinds it must not have (pure)."""

from __future__ import annotations

from typing import Any

from .autoscaling import build_hpa, build_http_scaled_object, build_scaledobject
from .builders import (
    ASR,
    build_configmap,
    build_deployment,
    build_pdb,
    build_service,
    build_servicemonitor,
    wants_pdb,
)


def desired_children(asr: ASR) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """(manifests to create or patch, (kind, name) of children that must not exist), in apply order."""
    s = asr.spec
    configmap = build_configmap(asr)
    present: list[dict[str, Any]] = [configmap, build_deployment(asr, configmap), build_service(asr)]
    absent: list[tuple[str, str]] = []
    if wants_pdb(s):
        present.append(build_pdb(asr))
    else:
        absent.append(("PodDisruptionBudget", asr.name))
    if s.autoscaling.scales_to_zero:  # before the ScaledObject whose push trigger names it
        present.append(build_http_scaled_object(asr))
    else:
        absent.append(("HTTPScaledObject", asr.name))
    if s.autoscaling.enabled and s.autoscaling.engine == "keda":
        present.append(build_scaledobject(asr))
    else:
        absent.append(("ScaledObject", asr.name))
    if s.autoscaling.enabled and s.autoscaling.engine == "hpa":
        present.append(build_hpa(asr))
    else:
        absent.append(("HorizontalPodAutoscaler", asr.name))
    if s.service_monitor_enabled:
        present.append(build_servicemonitor(asr))
    else:
        absent.append(("ServiceMonitor", asr.name))
    return present, absent
