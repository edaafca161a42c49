"""The ASRDeployment status, computed from the owned Deployment and the last reconcile outcome (pure)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from .pod_health import POD_REASONS, PodProblem

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
METRICS_AVAILABLE = "MetricsAvailable"  # only with autoscaling: does the autoscaler read the queue depth?
CONDITION_TYPES = (READY, PROGRESSING, DEGRADED, METRICS_AVAILABLE)
NO_DATA_HINT = (
    "is Prometheus scraping the pods? (monitoring.serviceMonitor, or prometheus.io annotations with the pod labels "
    "kept); with the hpa engine, is prometheus-adapter serving custom.metrics.k8s.io?"
)


@dataclass(frozen=True)
class Outcome:
    """What the reconcile step learned: None fields mean 'keep what the status says'."""

    ok: bool
    reason: str = "Reconciled"
    message: str = ""


IDLE_AT_ZERO = "idle at 0 replicas: a request through KEDA's HTTP add-on starts a pod and is held until it is ready"


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(
    previous: dict[str, dict[str, Any]],
    type_: str,
    status: bool | None,
    reason: str,
    message: str,
    generation: int | None,
    timestamp: str,
) -> dict[str, Any]:
    value = "Unknown" if status is None else "True" if status else "False"
    old = previous.get(type_)
    transition = old.get("lastTransitionTime") if old and old.get("status") == value else None
    cond: dict[str, Any] = {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition or timestamp,
    }
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


def deployment_progress(deployment: dict[str, Any] | None) -> tuple[int, int, int, int, bool, str]:
    """(desired, current, ready, updated, rollout failed, failure message) of a Deployment."""
    if not deployment:
        return 0, 0, 0, 0, False, ""
    spec = deployment.get("spec") or {}
    st = deployment.get("status") or {}
    desired = int(spec.get("replicas", 1) or 0)
    failed, message = False, ""
    for c in st.get("conditions") or []:
        if c.get("type") == "Progressing" and c.get("reason") == "ProgressDeadlineExceeded":
            failed, message = True, c.get("message", "progress deadline exceeded")
        if c.get("type") == "ReplicaFailure" and c.get("status") == "True":
            failed, message = True, c.get("message", "replica failure")
    return (
        desired,
        int(st.get("replicas", 0) or 0),
        int(st.get("readyReplicas", 0) or 0),
        int(st.get("updatedReplicas", 0) or 0),
        failed,
        message,
    )


def _autoscaler_condition(engine: str, autoscaler: dict[str, Any] | None) -> tuple[bool | None, str, str]:
    """Whether the autoscaler reads its metric, from its own conditions: the HPA's ScalingActive (False when the
    metric cannot be fetched), KEDA's ScaledObject Ready (False when a trigger's query fails or returns nothing)."""
    kind, wanted = ("ScaledObject", "Ready") if engine == "keda" else ("HorizontalPodAutoscaler", "ScalingActive")
    if autoscaler is None:
        return None, "NoAutoscaler", f"the {kind} does not exist (yet)"
    conditions = {c.get("type"): c for c in (autoscaler.get("status") or {}).get("conditions") or []}
    cond = conditions.get(wanted)
    if cond is None or cond.get("status") not in ("True", "False"):
        who = "KEDA" if engine == "keda" else "the HPA controller"
        return None, "NotEvaluated", f"{who} has not evaluated the {kind} yet"
    if cond["status"] == "True":
        return True, "MetricRead", f"{kind} {wanted}: {cond.get('reason', '')}"
    detail = " ".join(str(cond.get("message") or "").split())[:300]
    return False, "NoMetricData", f"{kind} {cond.get('reason', wanted)}: {detail} — {NO_DATA_HINT}"


def compute_status(
    current: dict[str, Any] | None,
    *,
    generation: int | None,
    deployment: dict[str, Any] | None,
    outcome: Outcome | None,
    endpoint: str,
    selector: str,
    image: str | None = None,
    pods: PodProblem | None = None,
    autoscaling: tuple[str, dict[str, Any] | None] | None = None,
    scales_to_zero: bool = False,
    timestamp: str | None = None,
) -> dict[str, Any]:
    """The full status. `outcome` None (a Deployment event, not a reconcile) keeps observedGeneration and the
    reconcile part of Degraded from `current`. `pods`: the most serious problem of the pods, which becomes the
    Ready condition's reason while none is ready (and Degraded's, unless the pods only wait for a node).
    `autoscaling`: (engine, the live autoscaler) when autoscaling is on → the MetricsAvailable condition.
    `scales_to_zero`: minReplicas 0, where 0 replicas is the idle state, ready to serve through the HTTP add-on."""
    current = current or {}
    timestamp = timestamp or now()
    previous: dict[str, dict[str, Any]] = {
        str(c.get("type")): c for c in current.get("conditions") or [] if isinstance(c, dict)
    }
    desired, replicas, ready, updated, rollout_failed, rollout_message = deployment_progress(deployment)

    if outcome is None:
        observed = current.get("observedGeneration")
        old = previous.get(DEGRADED, {})
        observed_problem = old.get("reason") == "RolloutFailed" or old.get("reason") in POD_REASONS
        spec_problem = old.get("status") == "True" and not observed_problem
        outcome = Outcome(False, old.get("reason", "Error"), old.get("message", "")) if spec_problem else Outcome(True)
    else:
        observed = generation if outcome.ok else current.get("observedGeneration")

    if not outcome.ok:
        degraded = (True, outcome.reason, outcome.message)
    elif pods is not None and pods.reason != "Unschedulable":
        degraded = (True, pods.reason, pods.describe())
    elif rollout_failed:
        degraded = (True, "RolloutFailed", rollout_message)
    else:
        degraded = (False, "AsExpected", "")

    if deployment is None:
        ready_c = (False, "NoDeployment", "the Deployment does not exist yet")
    elif desired == 0 and scales_to_zero:
        ready_c = (True, "ScaledToZero", IDLE_AT_ZERO)
    elif desired == 0:
        ready_c = (False, "ScaledToZero", "replicas is 0")
    elif ready >= 1:
        ready_c = (True, "MinimumReplicasReady", f"{ready}/{desired} replicas ready")
    elif pods is not None:
        ready_c = (False, pods.reason, f"0/{desired} replicas ready: {pods.describe()}")
    else:
        ready_c = (False, "NoReplicasReady", f"0/{desired} replicas ready (the model may still be loading)")

    is_ready = ready_c[0]
    rolling = deployment is not None and (updated < desired or ready < desired or replicas > desired)
    if not outcome.ok:
        prog_c = (False, outcome.reason, outcome.message)
    elif rolling and pods is not None:
        prog_c = (True, pods.reason, f"{updated} updated, {ready} ready of {desired}: {pods.describe()}")
    elif rolling:
        prog_c = (True, "RollingOut", f"{updated} updated, {ready} ready of {desired}")
    else:
        prog_c = (False, "Complete", "all replicas are updated and ready")

    if not outcome.ok and outcome.reason == "InvalidSpec":
        phase = "Failed"
    elif degraded[0]:
        phase = "Degraded"
    elif is_ready and not rolling:
        phase = "Ready"
    elif is_ready or rolling:
        phase = "Progressing"
    else:
        phase = "Pending"

    status: dict[str, Any] = {
        "phase": phase,
        "replicas": replicas,
        "readyReplicas": ready,
        "endpoint": endpoint,
        "selector": selector,
        "conditions": [
            _condition(previous, READY, *ready_c, generation, timestamp),
            _condition(previous, PROGRESSING, *prog_c, generation, timestamp),
            _condition(previous, DEGRADED, *degraded, generation, timestamp),
        ],
    }
    if autoscaling is not None:
        metrics_c = _autoscaler_condition(*autoscaling)
        status["conditions"].append(_condition(previous, METRICS_AVAILABLE, *metrics_c, generation, timestamp))
    if observed is not None:
        status["observedGeneration"] = observed
    if image:
        status["image"] = image
    elif current.get("image"):
        status["image"] = current["image"]
    return status


def status_changed(current: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """Whether writing `new` changes anything but timestamps."""
    current = current or {}

    def strip(st: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in st.items() if k in new}
        out["conditions"] = [
            {k: v for k, v in c.items() if k != "lastTransitionTime"} for c in st.get("conditions") or []
        ]
        return out

    return strip(current) != strip(new)
