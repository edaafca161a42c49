"""Reconciliation: desired children from the builders, create-or-patch each, delete the unwanted ones.

Kept free of kopf's handler machinery so the handlers stay thin; errors are classified here into
`InvalidSpec` (permanent: the spec cannot work) and `ChildApiError` (with a retry hint).
"""

from __future__ import annotations

import copy
import datetime
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from .builders import ASR, pod_selector_string
from .children import desired_children
from .kube import KINDS, Kube, is_subset, strip_path, three_way_patch, with_last_applied
from .metrics import CHILD_REPAIRS_TOTAL
from .pod_health import POD_REASONS, PodProblem, event_problem, pod_problem, pod_problem_of, stuck_creating
from .spec import KIND, InvalidSpec, parse_spec
from .status import Outcome, compute_status, deployment_progress, status_changed

REPLICAS_PATH = ("spec", "replicas")
# Children whose status the ASRDeployment's status reports: their events refresh it.
STATUS_SOURCES = frozenset({"Deployment", "ScaledObject", "HorizontalPodAutoscaler"})


def plain(obj: Any) -> Any:
    """A deep copy made of plain dicts and lists (kopf bodies are read-only mapping views)."""
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    return copy.deepcopy(obj)


def asr_from_body(body: Mapping[str, Any], default_image: str) -> ASR:
    meta = body.get("metadata") or {}
    return ASR(
        name=str(meta.get("name")),
        namespace=str(meta.get("namespace")),
        spec=parse_spec(body.get("spec")),
        default_image=default_image,
    )


@dataclass
class ChildApiError(Exception):
    """The API server refused an operation on a child."""

    kind: str
    name: str
    operation: str
    status: int
    detail: str

    def __str__(self) -> str:
        return f"{self.operation} {self.kind}/{self.name}: HTTP {self.status}: {self.detail}"

    @property
    def reason(self) -> str:
        if self.status == 404 and self.operation == "create":
            return "MissingAPI"
        reasons = {403: "Forbidden", 409: "Conflict", 400: "Rejected", 422: "Rejected"}
        return reasons.get(self.status, "ApiError")

    @property
    def permanent(self) -> bool:
        """The server will refuse the same manifest again: only a spec change helps."""
        return self.status in (400, 422)

    @property
    def retry_delay(self) -> float:
        return {403: 60.0, 404: 60.0, 409: 2.0}.get(self.status, 10.0)


def _api_error(e: ApiException, kind: str, name: str, operation: str) -> ChildApiError:
    detail = str(e.reason or "")
    if e.status == 404 and operation == "create":
        k = KINDS[kind]
        detail = f"{k.api_version} {k.plural} is not served by this cluster (is its operator/CRD installed?)"
    elif e.body:
        detail = f"{detail}: {str(e.body)[:300]}"
    return ChildApiError(kind, name, operation, int(e.status or 0), detail)


def _owner_ref(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The ownerReference of the ASRDeployment that controls `obj`, if any."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == KIND and ref.get("controller"):
            return ref
    return None


def _owner_uid(obj: Mapping[str, Any]) -> str | None:
    ref = _owner_ref(obj)
    return str(ref.get("uid")) if ref is not None else None


def apply_child(
    kube: Kube,
    desired: dict[str, Any],
    owner: Mapping[str, Any],
    *,
    autoscaled: bool = False,
    live: dict[str, Any] | None = None,
    assume_absent: bool = False,
    fresh: bool = False,
) -> tuple[dict[str, Any], str]:
    """Create the child, or patch it when it drifted from `desired` (never create-or-ignore).

    With autoscaling the Deployment's replica count belongs to the autoscaler: it is set at creation only.
    `assume_absent` (a brand-new owner): create without looking first; a 409 falls back to get + patch.
    `fresh`: read the live child from the API server even where the client caches its kind.
    Returns the live object and what was done: "created", "patched" or "unchanged".
    """
    desired = copy.deepcopy(desired)
    kopf.adopt(desired, owner=owner)  # type: ignore[arg-type]
    kind, meta = KINDS[desired["kind"]], desired["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    keep: frozenset[tuple[str, ...]] = frozenset()
    recorded = desired
    if autoscaled and kind.kind == "Deployment":
        recorded = strip_path(desired, REPLICAS_PATH)
        keep = frozenset({REPLICAS_PATH})
    try:
        if live is None and not assume_absent:
            live = kube.get(kind, namespace, name, fresh=fresh)
        if live is None:
            body = with_last_applied(recorded)
            if recorded is not desired:
                body["spec"]["replicas"] = desired["spec"]["replicas"]
            try:
                return kube.create(kind, namespace, body), "created"
            except ApiException as e:
                if e.status != 409:
                    raise
                live = kube.get(kind, namespace, name, fresh=True)  # created meanwhile (a child event): patch it
                if live is None:
                    raise
        if is_subset(with_last_applied(recorded), live):
            return live, "unchanged"
        return kube.patch(kind, namespace, name, three_way_patch(live, recorded, keep)), "patched"
    except ApiException as e:
        operation = "create" if live is None else "patch"
        raise _api_error(e, kind.kind, name, operation) from e


def delete_child(
    kube: Kube, kind_name: str, namespace: str, name: str, owner_uid: str | None, *, fresh: bool = False
) -> bool:
    """Delete a child that is no longer wanted — only if this ASRDeployment owns it."""
    kind = KINDS[kind_name]
    try:
        live = kube.get(kind, namespace, name, fresh=fresh)
        if live is None or (owner_uid is not None and _owner_uid(live) != owner_uid):
            return False
        return kube.delete(kind, namespace, name)
    except ApiException as e:
        if e.status == 404:  # the resource type itself is not served: nothing to delete
            return False
        raise _api_error(e, kind_name, name, "delete") from e


def reconcile(
    kube: Kube, body: Mapping[str, Any], default_image: str, *, new: bool = False, fresh: bool = False
) -> ASR:
    """Bring every child in line with the spec. Returns the parsed ASRDeployment.

    `new`: the ASRDeployment was just created, so it owns nothing yet: no unwanted child can be its own (they are
    not looked up) and its children are created without a lookup first — half the API calls of a burst of new CRs.
    `fresh`: children read from the API server, not the client's cache (the periodic resync: a backstop).
    Raises InvalidSpec or ChildApiError.
    """
    asr = asr_from_body(body, default_image)
    owner = plain(body)
    present, absent = desired_children(asr)
    # Unwanted children go first: KEDA's admission webhook refuses a ScaledObject for a Deployment that an HPA
    # still targets, so on an hpa → keda switch the old HPA must be gone before the ScaledObject is created.
    uid = (owner.get("metadata") or {}).get("uid")
    for kind_name, name in [] if new else absent:
        delete_child(kube, kind_name, asr.namespace, name, uid, fresh=fresh)
    for obj in present:
        apply_child(kube, obj, owner, autoscaled=asr.spec.autoscaling.enabled, assume_absent=new, fresh=fresh)
    return asr


def repair_child(kube: Kube, child: Mapping[str, Any], deleted: bool, default_image: str) -> tuple[ASR, str] | None:
    """Restore one child after an edit or deletion by hand.

    Returns (the owner's ASR, what was done: created / patched / unchanged), or None when the child has no
    live owner or is not wanted.
    """
    meta = child.get("metadata") or {}
    ref = _owner_ref(child)
    if ref is None:
        return None
    uid, owner_name = str(ref.get("uid")), str(ref.get("name"))
    namespace = str(meta.get("namespace"))
    key = (str(child.get("kind")), namespace, str(meta.get("name")))
    if deleted:
        _IN_SYNC.pop(key, None)
    try:
        owner = kube.get(KINDS[KIND], namespace, owner_name)
    except ApiException as e:
        raise _api_error(e, KIND, owner_name, "get") from e
    if owner is None or owner["metadata"].get("uid") != uid or owner["metadata"].get("deletionTimestamp"):
        return None
    try:
        asr = asr_from_body(owner, default_image)
    except InvalidSpec:
        return None  # the owner's own handler reports it
    present, _ = desired_children(asr)
    for obj in present:
        if obj["kind"] == child.get("kind") and obj["metadata"]["name"] == meta.get("name"):
            live = None if deleted else plain(child)  # a deleted child is looked up again: maybe recreated
            result, action = apply_child(kube, obj, owner, autoscaled=asr.spec.autoscaling.enabled, live=live)
            _remember_in_sync(key, result)
            return asr, action
    return None


def handle_child_event(
    kube: Kube,
    child: Mapping[str, Any],
    deleted: bool,
    default_image: str,
    logger: logging.Logger | logging.LoggerAdapter[Any],
) -> None:
    """A watch event of an owned child: restore it if it drifted or was deleted (counted in
    asr_operator_child_repairs_total and logged), and refresh the owner's status on events of the Deployment
    and the autoscaler.
    API errors are logged only: the owner's next reconcile retries."""
    kind, name = str(child.get("kind")), str((child.get("metadata") or {}).get("name"))
    if not deleted and spec_unchanged_since_verified(child):
        # a status update of a child already checked at this generation: nothing to repair, only the status
        ref = _owner_ref(child)
        if kind in STATUS_SOURCES and ref is not None:
            _refresh_status(kube, str(child["metadata"].get("namespace")), str(ref.get("name")), None, child, logger)
        return
    try:
        repaired = repair_child(kube, child, deleted, default_image)
    except ChildApiError as e:
        logger.warning("could not restore %s/%s: %s", kind, name, e)
        return
    if repaired is None:
        return
    asr, action = repaired
    if action != "unchanged":
        CHILD_REPAIRS_TOTAL.labels(kind=kind).inc()
        logger.info("%s %s %s/%s back", action, kind, asr.namespace, name)
    if kind in STATUS_SOURCES:
        _refresh_status(kube, asr.namespace, asr.name, asr, None if deleted else child, logger)


def _refresh_status(
    kube: Kube,
    namespace: str,
    name: str,
    asr: ASR | None,
    child: Mapping[str, Any] | None,
    logger: logging.Logger | logging.LoggerAdapter[Any],
) -> None:
    """The owner's status after an event of its Deployment (whose body is fresh: not read again) or autoscaler."""
    deployment = plain(child) if child is not None and child.get("kind") == "Deployment" else None
    try:
        write_status(kube, namespace, name, outcome=None, generation=None, asr=asr, deployment=deployment)
    except ChildApiError as e:
        logger.warning("could not update the status: %s", e)


# Children checked against their owner's spec, by (kind, namespace, name): (uid, generation) at that check. An
# event of the same object at the same generation changed its status or metadata only (a spec edit bumps the
# generation): no owner lookup, no drift check. Kinds without a generation (ConfigMap, Service) are always checked;
# metadata-only edits are caught by the resync.
_IN_SYNC: dict[tuple[str, str, str], tuple[str, int]] = {}


def _remember_in_sync(key: tuple[str, str, str], live: Mapping[str, Any]) -> None:
    meta = live.get("metadata") or {}
    if isinstance(meta.get("generation"), int) and meta.get("uid"):
        _IN_SYNC[key] = (str(meta["uid"]), int(meta["generation"]))


def spec_unchanged_since_verified(child: Mapping[str, Any]) -> bool:
    meta = child.get("metadata") or {}
    key = (str(child.get("kind")), str(meta.get("namespace")), str(meta.get("name")))
    return _IN_SYNC.get(key) == (str(meta.get("uid")), meta.get("generation"))


def pod_event_changes_status(kube: Kube, namespace: str, owner: str, pod: Mapping[str, Any]) -> bool:
    """Whether a pod event can change its owner's status: the pod has a problem, or the status reports one (which
    may just have cleared). A healthy pod's events otherwise change nothing the Deployment's own events do not
    report, and skipping them spares a burst of new pods three reads each."""
    if pod_problem_of(plain(pod)) is not None:
        return True
    try:
        cr = kube.get(KINDS[KIND], namespace, owner)
    except ApiException:
        return True  # let write_status try, and report
    conditions = ((cr or {}).get("status") or {}).get("conditions") or []
    return any(c.get("reason") in POD_REASONS for c in conditions)


def unseen_by_controller(deployment: dict[str, Any]) -> bool:
    """The Deployment controller has not acted on this Deployment yet (no status): it has no pods to look at."""
    return not (deployment.get("status") or {}).get("observedGeneration")


def rollout_complete(deployment: dict[str, Any]) -> bool:
    """Every desired replica updated, ready and no other pod around: no pod can have a problem worth reporting."""
    desired, replicas, ready, updated, _, _ = deployment_progress(deployment)
    st = deployment.get("status") or {}
    available = int(st.get("availableReplicas", 0) or 0)
    generation = int((deployment.get("metadata") or {}).get("generation", 0) or 0)
    observed = int(st.get("observedGeneration", 0) or 0) >= generation
    return observed and desired > 0 and replicas == ready == updated == available == desired


def _pod_problem(kube: Kube, namespace: str, selector: str) -> PodProblem | None:
    """The pods' most serious problem; None when they cannot be listed (the status then says less, no more)."""
    try:
        pods = kube.list(KINDS["Pod"], namespace, selector)
        problem = pod_problem(pods)
        for name in stuck_creating(pods, datetime.datetime.now(datetime.UTC)) if problem is None else []:
            # only the kubelet's events say why a scheduled pod never starts (a volume, the sandbox)
            events = kube.list(KINDS["Event"], namespace, field_selector=f"involvedObject.name={name}")
            if problem := event_problem(name, events):
                break
        return problem
    except ApiException as e:
        logging.getLogger(__name__).warning("cannot list the pods of %s: HTTP %s", selector, e.status)
        return None


def _autoscaler_of(kube: Kube, cr: Mapping[str, Any]) -> tuple[str, dict[str, Any] | None] | None:
    """(engine, the live ScaledObject or HPA) when the CR autoscales; None when it does not. Read from the CR as
    stored (defaulted by the API server), so that it works for a spec the operator refuses too."""
    auto = (cr.get("spec") or {}).get("autoscaling") or {}
    if not auto.get("enabled"):
        return None
    engine = str(auto.get("engine") or "keda")
    kind = KINDS["ScaledObject" if engine == "keda" else "HorizontalPodAutoscaler"]
    meta = cr.get("metadata") or {}
    try:
        return engine, kube.get(kind, str(meta.get("namespace")), str(meta.get("name")))
    except ApiException:
        return engine, None


def _scales_to_zero(cr: Mapping[str, Any]) -> bool:
    """minReplicas 0 with autoscaling on, read from the CR as stored (like _autoscaler_of)."""
    auto = (cr.get("spec") or {}).get("autoscaling") or {}
    return bool(auto.get("enabled")) and auto.get("minReplicas") == 0


_STATUS_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_STATUS_LOCKS_GUARD = threading.Lock()


def _status_lock(namespace: str, name: str) -> threading.Lock:
    with _STATUS_LOCKS_GUARD:
        return _STATUS_LOCKS.setdefault((namespace, name), threading.Lock())


def write_status(
    kube: Kube,
    namespace: str,
    name: str,
    *,
    outcome: Outcome | None,
    generation: int | None,
    asr: ASR | None,
    deployment: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Recompute the status from the newest copies of the CR and its Deployment (the operator's watches and writes
    keep them in the client's cache: no read per event; `deployment`, the copy an event or a write brought, unless
    the cache holds a newer one), and patch it if it changed.

    Both writers (the CR's handlers with the reconcile `outcome`, the Deployment watch with None) go through
    here, serialized per object, so a status computed from an older Deployment never overwrites a newer one.
    `generation` is the generation that was reconciled (not the CR's current one, which may be newer).
    Returns the new status, or None when the CR is gone.
    """
    with _status_lock(namespace, name):
        try:
            cr = kube.get(KINDS[KIND], namespace, name)
            if cr is None:
                return None
            if deployment is None:
                deployment = kube.get(KINDS["Deployment"], namespace, name)
            else:
                deployment = kube.cache.newest(deployment)
            pods = None
            if deployment is not None and not (rollout_complete(deployment) or unseen_by_controller(deployment)):
                pods = _pod_problem(kube, namespace, pod_selector_string(name))
            autoscaling = _autoscaler_of(kube, cr)
            current = cr.get("status") or {}
            if asr is not None:
                endpoint, selector, image = asr.endpoint, asr.selector_string, asr.image
            else:
                endpoint = current.get("endpoint") or f"http://{name}.{namespace}.svc"
                selector = pod_selector_string(name)
                image = None
            new = compute_status(
                current,
                generation=generation if outcome is not None else cr["metadata"].get("generation"),
                deployment=deployment,
                outcome=outcome,
                endpoint=endpoint,
                selector=selector,
                image=image,
                pods=pods,
                autoscaling=autoscaling,
                scales_to_zero=_scales_to_zero(cr),
            )
            if status_changed(current, new):
                kube.patch(KINDS[KIND], namespace, name, {"status": new}, "status")
            return new
        except ApiException as e:
            if e.status == 404:  # deleted since the copy read (a cached copy can outlive its object briefly)
                kube.cache.forget(KIND, namespace, name)
                return None
            raise _api_error(e, KIND, name, "status") from e
