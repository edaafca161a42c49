"""Why pods are not ready (pod_health) and how the status reports it (status.compute_status with pods=...).

The pod objects are shaped like the kubelet's and the scheduler's writes (field names from core/v1 PodStatus)."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from asr_operator.pod_health import PodProblem, event_problem, pod_problem, stuck_creating
from asr_operator.status import Outcome, compute_status

COMMON = {"endpoint": "http://a.ns.svc:8000", "selector": "x=y"}
UNSCHEDULABLE_MSG = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."


def _pod(name: str, *, conditions: Any = (), containers: Any = (), deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-07T00:00:00Z"
    return {"metadata": meta, "status": {"conditions": list(conditions), "containerStatuses": list(containers)}}


def _unschedulable(name: str) -> dict[str, Any]:
    cond = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": UNSCHEDULABLE_MSG}
    return _pod(name, conditions=[cond])


def _waiting(name: str, reason: str, last: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"name": "asr-serve", "state": {"waiting": {"reason": reason, "message": "back-off"}}}
    if last:
        status["lastState"] = {"terminated": {"reason": last, "exitCode": 137}}
    return _pod(name, containers=[status])


def _running(name: str, last: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"name": "asr-serve", "state": {"running": {}}}
    if last:
        status["lastState"] = {"terminated": {"reason": last, "exitCode": 137}}
    return _pod(name, containers=[status])


def _dep(desired: int, ready: int, updated: int) -> dict[str, Any]:
    return {
        "spec": {"replicas": desired},
        "status": {"replicas": desired, "readyReplicas": ready, "updatedReplicas": updated},
    }


def _cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


@pytest.mark.parametrize(
    ("pods", "reason"),
    [
        ([_unschedulable("a")], "Unschedulable"),
        ([_waiting("a", "ImagePullBackOff")], "ImagePullBackOff"),
        ([_waiting("a", "ErrImagePull")], "ErrImagePull"),
        ([_waiting("a", "CrashLoopBackOff")], "CrashLoopBackOff"),
        ([_waiting("a", "CrashLoopBackOff", last="OOMKilled")], "OOMKilled"),  # the cause, not the symptom
        ([_waiting("a", "CreateContainerConfigError")], "CreateContainerConfigError"),
        ([_unschedulable("a"), _waiting("b", "CrashLoopBackOff")], "CrashLoopBackOff"),  # most serious wins
        ([_running("a")], None),
        ([_running("a", last="OOMKilled")], None),  # killed once, running again: not a present problem
        ([_waiting("a", "ContainerCreating")], None),  # just starting
        ([_unschedulable("a") | {"metadata": {"name": "a", "deletionTimestamp": "x"}}], None),  # going away
        ([], None),
    ],
)
def test_pod_problem_reason(pods: list[dict[str, Any]], reason: str | None) -> None:
    problem = pod_problem(pods)
    assert (problem.reason if problem else None) == reason


def test_pod_problem_names_the_first_pod_and_counts_the_others() -> None:
    problem = pod_problem([_unschedulable("b"), _unschedulable("a"), _running("c")])
    assert problem == PodProblem("Unschedulable", "a", UNSCHEDULABLE_MSG, 2)
    assert problem.describe() == f"pod a (and 1 more pods): Unschedulable: {UNSCHEDULABLE_MSG}"


def test_oom_message_says_which_limit_to_raise() -> None:
    problem = pod_problem([_waiting("a", "CrashLoopBackOff", last="OOMKilled")])
    assert problem is not None and "resources.limits.memory" in problem.message


def test_unschedulable_is_the_ready_reason_but_not_degraded() -> None:
    pods = pod_problem([_unschedulable("a")])
    st = compute_status({}, generation=1, deployment=_dep(1, 0, 1), outcome=Outcome(True), pods=pods, **COMMON)
    ready = _cond(st, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "Unschedulable")
    assert UNSCHEDULABLE_MSG in ready["message"] and "may still be loading" not in ready["message"]
    assert _cond(st, "Degraded")["status"] == "False" and st["phase"] == "Progressing"


@pytest.mark.parametrize("reason", ["CrashLoopBackOff", "ImagePullBackOff"])
def test_a_failing_pod_degrades_and_a_deployment_event_keeps_it_until_the_pods_recover(reason: str) -> None:
    pods = pod_problem([_waiting("a", reason)])
    st = compute_status({}, generation=1, deployment=_dep(1, 0, 1), outcome=Outcome(True), pods=pods, **COMMON)
    assert (_cond(st, "Degraded")["reason"], _cond(st, "Ready")["reason"], st["phase"]) == (reason, reason, "Degraded")
    # A later event with healthy pods clears it: a pod reason is observed, not a reconcile error to keep.
    healed = compute_status(st, generation=None, deployment=_dep(1, 1, 1), outcome=None, pods=None, **COMMON)
    assert _cond(healed, "Degraded")["status"] == "False" and healed["phase"] == "Ready"


def test_a_rollout_whose_new_pod_crashes_says_so_while_old_pods_serve() -> None:
    pods = pod_problem([_waiting("new", "CrashLoopBackOff", last="OOMKilled")])
    st = compute_status({}, generation=2, deployment=_dep(2, 1, 1), outcome=Outcome(True), pods=pods, **COMMON)
    assert _cond(st, "Ready")["status"] == "True"
    assert _cond(st, "Progressing")["reason"] == "OOMKilled" and "pod new" in _cond(st, "Progressing")["message"]
    assert _cond(st, "Degraded")["reason"] == "OOMKilled"


# --- MetricsAvailable: does the autoscaler read the queue depth? --------------------------------------------


def _autoscaler(condition_type: str, status: str, reason: str = "R", message: str = "") -> dict[str, Any]:
    cond = {"type": condition_type, "status": status, "reason": reason, "message": message}
    return {"status": {"conditions": [cond]}}


@pytest.mark.parametrize(
    ("engine", "autoscaler", "status", "reason"),
    [
        ("hpa", None, "Unknown", "NoAutoscaler"),
        ("hpa", {"status": {}}, "Unknown", "NotEvaluated"),
        ("hpa", _autoscaler("ScalingActive", "True", "ValidMetricFound"), "True", "MetricRead"),
        (
            "hpa",
            _autoscaler("ScalingActive", "False", "FailedGetPodsMetric", "no custom metrics API"),
            "False",
            "NoMetricData",
        ),
        (
            "keda",
            _autoscaler("Ready", "False", "ScaledObjectCheckFailed", "the result is empty"),
            "False",
            "NoMetricData",
        ),
        ("keda", _autoscaler("Ready", "True", "ScaledObjectReady"), "True", "MetricRead"),
        ("keda", _autoscaler("Ready", "Unknown"), "Unknown", "NotEvaluated"),
    ],
)
def test_metrics_available_follows_the_autoscalers_own_condition(
    engine: str, autoscaler: dict[str, Any] | None, status: str, reason: str
) -> None:
    st = compute_status(
        {}, generation=1, deployment=_dep(1, 1, 1), outcome=Outcome(True), autoscaling=(engine, autoscaler), **COMMON
    )
    cond = _cond(st, "MetricsAvailable")
    assert (cond["status"], cond["reason"]) == (status, reason)
    if status == "False":
        inner = autoscaler["status"]["conditions"][0]  # type: ignore[index]
        assert inner["reason"] in cond["message"] and inner["message"] in cond["message"]
        assert "scraping" in cond["message"]  # says what to check


def test_no_metrics_condition_without_autoscaling() -> None:
    st = compute_status({}, generation=1, deployment=_dep(1, 1, 1), outcome=Outcome(True), **COMMON)
    assert "MetricsAvailable" not in {c["type"] for c in st["conditions"]}


# --- a scheduled pod that never starts: only the kubelet's events say why --------------------------------------

NOW = datetime.datetime(2026, 12, 7, 1, 0, 0, tzinfo=datetime.UTC)


def _creating(name: str, scheduled_s_ago: float) -> dict[str, Any]:
    at = (NOW - datetime.timedelta(seconds=scheduled_s_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
    pod = _pod(name, conditions=[{"type": "PodScheduled", "status": "True", "lastTransitionTime": at}],
               containers=[{"name": "asr-serve", "state": {"waiting": {"reason": "ContainerCreating"}}}])  # fmt: skip
    pod["status"]["phase"] = "Pending"
    return pod


def _event(pod: str, reason: str, message: str, at: str = "2026-12-07T00:59:50Z", type_: str = "Warning") -> dict:
    return {"type": type_, "reason": reason, "message": message, "lastTimestamp": at,
            "involvedObject": {"kind": "Pod", "name": pod}}  # fmt: skip


def test_only_pods_creating_for_a_while_are_looked_into() -> None:
    pods = [_creating("b", 60), _creating("a", 5), _running("c"), _creating("d", 90)]
    assert stuck_creating(pods, NOW) == ["b", "d"]


def test_the_newest_mount_failure_is_the_reason() -> None:
    events = [
        _event("a", "FailedMount", "old", at="2026-12-07T00:58:00Z"),
        _event("a", "FailedMount", 'MountVolume.SetUp failed for volume "model-cache" : hostPath type check failed'),
        _event("a", "Scheduled", "fine", type_="Normal"),
        _event("other", "FailedCreatePodSandBox", "not this pod"),
    ]
    problem = event_problem("a", events)
    assert problem is not None and problem.reason == "FailedMount" and "hostPath type check" in problem.message
    assert event_problem("a", [_event("a", "Pulled", "ok", type_="Normal")]) is None


@pytest.mark.parametrize(("scales_to_zero", "ready", "phase"), [(True, "True", "Ready"), (False, "False", "Pending")])
def test_zero_replicas_is_ready_only_where_the_http_addon_wakes_the_deployment(
    scales_to_zero: bool, ready: str, phase: str
) -> None:
    st = compute_status(
        {}, generation=1, deployment=_dep(0, 0, 0), outcome=Outcome(True), scales_to_zero=scales_to_zero, **COMMON
    )
    assert (_cond(st, "Ready")["status"], _cond(st, "Ready")["reason"], st["phase"]) == (ready, "ScaledToZero", phase)
