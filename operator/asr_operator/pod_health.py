"""Why the pods of an ASRDeployment are not ready, read from their conditions and container states (pure).

The Deployment only counts ready pods; the reason a pod is not ready lives on the pod: the scheduler's
PodScheduled condition (Unschedulable, with its "0/N nodes are available: ..." message) and the kubelet's
container states (ImagePullBackOff, CrashLoopBackOff, and OOMKilled as the last termination of a restarting
container). The status reports the most serious one, with the pod's name, instead of "the model may still be
loading".
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

# Most serious first: a container killed for memory explains the crash loop it causes; a bad image or a
# configuration error stops every pod; unschedulable pods wait for capacity that may come.
SEVERITY = (
    "OOMKilled",
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
    "FailedMount",
    "FailedAttachVolume",
    "FailedCreatePodSandBox",
    "Unschedulable",
)
# What only the kubelet's events tell: the pod stays ContainerCreating while its volumes or sandbox fail.
EVENT_REASONS = frozenset({"FailedMount", "FailedAttachVolume", "FailedCreatePodSandBox"})
CREATING = frozenset({"ContainerCreating", "PodInitializing"})
STUCK_AFTER_S = 20.0  # a pod still creating this long after being scheduled: look at its events
POD_REASONS = frozenset(SEVERITY)
MESSAGE_LIMIT = 400


@dataclass(frozen=True)
class PodProblem:
    reason: str
    pod: str
    message: str
    pods: int  # how many pods have a problem of this reason

    def describe(self) -> str:
        others = f" (and {self.pods - 1} more pods)" if self.pods > 1 else ""
        text = f"pod {self.pod}{others}: {self.reason}"
        if self.message:
            text += f": {self.message}"
        return text[:MESSAGE_LIMIT]


def _container_problem(status: dict[str, Any]) -> tuple[str, str] | None:
    waiting = (status.get("state") or {}).get("waiting") or {}
    last = (status.get("lastState") or {}).get("terminated") or {}
    terminated = (status.get("state") or {}).get("terminated") or {}
    for term in (terminated, last):
        if term.get("reason") == "OOMKilled" and (waiting or terminated):
            limit = "the container exceeded its memory limit (raise resources.limits.memory)"
            return "OOMKilled", f"{limit}; exit code {term.get('exitCode', 137)}"
    reason = str(waiting.get("reason") or "")
    if reason in POD_REASONS:
        return reason, str(waiting.get("message") or "")
    return None


def pod_problem_of(pod: dict[str, Any]) -> tuple[str, str] | None:
    """(reason, message) of one pod's most serious problem, or None (running, or just starting)."""
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return None  # a pod on its way out (rollout, scale-down) is not the reason of anything
    status = pod.get("status") or {}
    found: list[tuple[str, str]] = []
    for c in status.get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable":
            found.append(("Unschedulable", str(c.get("message") or "")))
    for cs in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        if problem := _container_problem(cs):
            found.append(problem)
    if not found:
        return None
    return min(found, key=lambda p: SEVERITY.index(p[0]))


def pod_problem(pods: list[dict[str, Any]]) -> PodProblem | None:
    """The most serious problem among the pods (first pod by name among equals), or None."""
    by_reason: dict[str, list[tuple[str, str]]] = {}
    for pod in sorted(pods, key=lambda p: str((p.get("metadata") or {}).get("name"))):
        if problem := pod_problem_of(pod):
            by_reason.setdefault(problem[0], []).append((str(pod["metadata"].get("name")), problem[1]))
    if not by_reason:
        return None
    reason = min(by_reason, key=SEVERITY.index)
    name, message = by_reason[reason][0]
    return PodProblem(reason, name, " ".join(message.split()), len(by_reason[reason]))


def _time(value: Any) -> datetime.datetime | None:
    try:
        return datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def stuck_creating(pods: list[dict[str, Any]], now: datetime.datetime) -> list[str]:
    """Names of the pods scheduled more than STUCK_AFTER_S ago whose containers are still being created."""
    stuck = []
    for pod in sorted(pods, key=lambda p: str((p.get("metadata") or {}).get("name"))):
        status = pod.get("status") or {}
        if (pod.get("metadata") or {}).get("deletionTimestamp") or status.get("phase") != "Pending":
            continue
        scheduled = next((c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"), None)
        since = _time((scheduled or {}).get("lastTransitionTime"))
        if not scheduled or scheduled.get("status") != "True" or since is None:
            continue
        waiting = [
            ((cs.get("state") or {}).get("waiting") or {}).get("reason") for cs in status.get("containerStatuses") or []
        ]
        if all(reason in CREATING for reason in waiting) and (now - since).total_seconds() > STUCK_AFTER_S:
            stuck.append(str(pod["metadata"]["name"]))
    return stuck


def event_problem(pod: str, events: list[dict[str, Any]]) -> PodProblem | None:
    """The newest Warning event about `pod` that explains why it cannot start (a volume, the sandbox)."""
    relevant = [
        e for e in events
        if e.get("type") == "Warning" and e.get("reason") in EVENT_REASONS
        and (e.get("involvedObject") or {}).get("name") == pod
    ]  # fmt: skip
    if not relevant:
        return None
    newest = max(relevant, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
    return PodProblem(str(newest["reason"]), pod, " ".join(str(newest.get("message") or "").split()), 1)
