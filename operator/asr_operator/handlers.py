"""kopf handlers of asr-operator: wiring only; the work is in `reconcile`.

Run with `asr-operator` or `kopf run -m asr_operator.handlers`.

- create / update / resume of an ASRDeployment → reconcile every child, write the status.
- a resync daemon per ASRDeployment (every ASR_OPERATOR_RESYNC_INTERVAL_S, default 60 s) → the same, as a
  backstop against missed events; it exits by itself once its ASRDeployment is gone.
- events of owned children (label app.kubernetes.io/managed-by=asr-operator, selected server-side) → a child
  edited or deleted by hand is patched back or recreated at once; Deployment events also refresh the status.
- events of the inference pods (same label) → the status says why they are not ready (Unschedulable,
  ImagePullBackOff, CrashLoopBackOff, OOMKilled): the Deployment's counts do not change when a pod fails.

No finalizer: children are garbage-collected through their ownerReferences, and nothing has to happen before
an ASRDeployment goes (a finalizer would leave it Terminating whenever the operator is down, e.g. during
`helm uninstall`, which deletes custom resources after the operator).

Replicas and autoscaling: with `spec.autoscaling.enabled` false the operator keeps the Deployment at
`spec.replicas` (the target of the CR's scale subresource). With it true the KEDA ScaledObject or HPA owns
the Deployment's replica count: the operator sets replicas only when it creates the Deployment (spec.replicas
clamped into [minReplicas, maxReplicas]) and never patches it afterwards.

Errors: a spec that passes the schema but cannot work → PermanentError, Degraded condition (reason
InvalidSpec, phase Failed) and a Warning event; API errors → TemporaryError with a delay (Degraded while they
last), except a manifest the API server rejects as invalid (400/422): permanent until the spec changes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import kopf

from .builders import LABEL_INSTANCE, LABEL_MANAGED_BY, MANAGED_BY
from .kube import KINDS, Kube
from .metrics import RECONCILE_DURATION, RECONCILE_TOTAL
from .reconcile import ChildApiError, handle_child_event, plain, pod_event_changes_status, reconcile, write_status
from .settings import OperatorSettings
from .spec import GROUP, KIND, PLURAL, VERSION, InvalidSpec
from .status import Outcome

CHILD_LABELS = {LABEL_MANAGED_BY: MANAGED_BY}
CHILD_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
CHILD_KINDS = (
    "ConfigMap",
    "Deployment",
    "Service",
    "PodDisruptionBudget",
    "HTTPScaledObject",
    "ScaledObject",
    "HorizontalPodAutoscaler",
    "ServiceMonitor",
)
RESYNC_ID = "resync"


@contextmanager
def _measured() -> Iterator[dict[str, str]]:
    result = {"result": "error"}
    start = time.perf_counter()
    try:
        yield result
    finally:
        RECONCILE_DURATION.observe(time.perf_counter() - start)
        RECONCILE_TOTAL.labels(result=result["result"]).inc()


# Read from the operator's own watches (on_owner_event, on_child_event) and writes instead of a GET per event.
CACHED_KINDS = frozenset({KIND, "Deployment"})
WORKER_THREADS = 32


def _kube(memo: kopf.Memo) -> Kube:
    kube = getattr(memo, "kube", None)
    if kube is None:
        kube = memo.kube = Kube.from_environment(CACHED_KINDS, pool_size=WORKER_THREADS)
    return kube


def _watched(memo: kopf.Memo, type: str | None, body: kopf.Body) -> None:
    """One watch event into the client's cache; bodies of kinds it does not keep are not even copied."""
    cache, meta = _kube(memo).cache, body.get("metadata") or {}
    kind, namespace, name = str(body.get("kind")), str(meta.get("namespace")), str(meta.get("name"))
    if kind not in cache.kinds:
        return
    if type == "DELETED":
        cache.forget(kind, namespace, name, meta.get("uid"))
    else:
        cache.observe(plain(body))


def run_reconcile(
    *,
    body: Mapping[str, Any],
    memo: kopf.Memo,
    settings: OperatorSettings,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    post_events: bool,
    new: bool = False,
    fresh: bool = False,
) -> None:
    """Reconcile, then write the status. Raises kopf's Permanent/TemporaryError."""
    meta = body.get("metadata") or {}
    generation = meta.get("generation")
    name, namespace = str(meta.get("name")), str(meta.get("namespace"))
    kube = _kube(memo)

    def write(outcome: Outcome, asr: Any = None) -> None:
        try:
            write_status(kube, namespace, name, outcome=outcome, generation=generation, asr=asr)
        except ChildApiError as e:
            raise kopf.TemporaryError(f"cannot write the status: {e}", delay=e.retry_delay) from None

    def warn(reason: str, message: str) -> None:
        if post_events:
            kopf.warn(body, reason=reason, message=message)  # type: ignore[arg-type]

    with _measured() as result:
        try:
            asr = reconcile(kube, body, settings.inference_image, new=new, fresh=fresh)
        except InvalidSpec as e:
            result["result"] = "invalid_spec"
            write(Outcome(False, "InvalidSpec", str(e)))
            warn("InvalidSpec", str(e))
            raise kopf.PermanentError(f"invalid spec: {e}") from None
        except ChildApiError as e:
            result["result"] = "error" if e.permanent else "retry"
            write(Outcome(False, e.reason, str(e)))
            warn(e.reason, str(e))
            if e.permanent:
                raise kopf.PermanentError(str(e)) from None
            raise kopf.TemporaryError(str(e), delay=e.retry_delay) from None
        result["result"] = "success"
        write(Outcome(True), asr)  # its Deployment as just written (the client's cache): not read again
        logger.debug("reconciled %s/%s", namespace, name)


def resync_once(memo: kopf.Memo, config: OperatorSettings, namespace: str, name: str, uid: str | None) -> bool:
    """One drift-repair pass on a fresh read of the CR; False once the CR (this uid) is gone or going."""
    logger = logging.getLogger(__name__)
    current = _kube(memo).get(KINDS[KIND], namespace, name, fresh=True)  # the backstop does not trust the cache
    meta = (current or {}).get("metadata") or {}
    if current is None or meta.get("uid") != uid or meta.get("deletionTimestamp"):
        return False
    try:  # errors were reported by the change handlers (status, events): no events here
        run_reconcile(body=current, memo=memo, settings=config, logger=logger, post_events=False, fresh=True)
    except (kopf.PermanentError, kopf.TemporaryError) as e:
        logger.debug("resync of %s/%s: %s", namespace, name, e)
    return True


def _without_finalizer(registry: kopf.OperatorRegistry, handler_id: str) -> None:
    """kopf gives every daemon `requires_finalizer=True` (to stop it before the object goes) and offers no
    option; ours stops itself when its CR is gone, so it must not hold the CR in Terminating."""
    spawning = registry._spawning
    spawning._handlers = [
        dataclasses.replace(h, requires_finalizer=False) if h.id == handler_id else h for h in spawning._handlers
    ]


def register(registry: kopf.OperatorRegistry, config: OperatorSettings) -> None:
    """Register every handler on `registry` (a fresh registry per test; the default one for `kopf run`)."""

    @kopf.on.startup(registry=registry)
    def on_startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        # Our own finalizer name, so that kopf finds and removes the one older versions added.
        settings.persistence.finalizer = f"{GROUP}/finalizer"
        # Handler progress and the last-handled spec in our annotations, not in kopf's default names.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
        # Kubernetes events only for warnings and errors (kopf posts one per handler run otherwise).
        settings.posting.level = logging.WARNING
        # Reconnect watches every 5 min: a silently dropped connection cannot hide events for long.
        settings.watching.server_timeout = 300
        # Sync handlers run in this many threads, mostly waiting on the API server: a burst of new CRs queues their
        # Deployments' status events behind the create handlers (200 CRs: Ready p95 18 s with 32, 21 s with 8;
        # docs/performance.md). Threads cost stacks, not heap: fine within 512 Mi.
        settings.execution.max_workers = WORKER_THREADS
        # Only our children stream into the operator: filtered by the API server, not client-side.
        for kind_name in (*CHILD_KINDS, "Pod"):
            kind = KINDS[kind_name]
            settings.watching.label_selectors[kind.group, kind.version, kind.plural] = CHILD_SELECTOR
        _kube(memo)

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry, id="cache")
    async def on_owner_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        """Every watched copy of an ASRDeployment (the initial listing too) into the client's cache, before the
        change handlers of the same event run. Async: a dict update, it never waits for a worker thread."""
        _watched(memo, type, body)

    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry, id="create")
    @kopf.on.update(GROUP, VERSION, PLURAL, registry=registry, id="update")
    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry, id="resume")
    def on_change(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, reason: str, retry: int, **_: Any) -> None:
        """A new ASRDeployment, a spec/label/annotation change, or an operator restart: reconcile everything."""
        new = reason == "create" and retry == 0  # a retry may follow a partial first attempt: look first then
        run_reconcile(body=body, memo=memo, settings=config, logger=logger, post_events=True, new=new)

    @kopf.daemon(GROUP, VERSION, PLURAL, registry=registry, id=RESYNC_ID)
    async def resync(name: str, namespace: str | None, uid: str, memo: kopf.Memo, **_: Any) -> None:
        """Periodic drift repair (a backstop against missed child events) until the CR is gone. An async
        daemon (kopf cancels it on stop or deletion): one sleeping task per CR, no thread held."""
        while True:
            await asyncio.sleep(config.resync_interval_s)
            if not await asyncio.to_thread(resync_once, memo, config, str(namespace), name, uid):
                return

    _without_finalizer(registry, RESYNC_ID)

    for kind_name in CHILD_KINDS:
        kind = KINDS[kind_name]

        # labels= repeats the server-side selector client-side (kopf's filter; harmless where the server did it).
        @kopf.on.event(
            kind.group, kind.version, kind.plural, labels=CHILD_LABELS, registry=registry, id=f"child-{kind.plural}"
        )
        def on_child_event(type: str | None, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
            """An owned child changed: restore it if it drifted or was deleted; refresh status."""
            _watched(memo, type, body)  # Deployments: read from the cache by the status writers
            if type is None:  # the initial listing: the resume handlers reconcile everything anyway
                return
            handle_child_event(_kube(memo), body, type == "DELETED", config.inference_image, logger)

    @kopf.on.event("", "v1", "pods", labels=CHILD_LABELS, registry=registry, id="pods")
    def on_pod_event(type: str | None, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
        """A pod of an ASRDeployment changed: refresh its owner's status (why the pods are not ready)."""
        meta = body.get("metadata") or {}
        owner = (meta.get("labels") or {}).get(LABEL_INSTANCE)
        if type is None or not owner:  # the initial listing: the resume handlers write every status anyway
            return
        kube, namespace = _kube(memo), str(meta.get("namespace"))
        if not pod_event_changes_status(kube, namespace, owner, body):
            return
        try:
            write_status(kube, namespace, owner, outcome=None, generation=None, asr=None)
        except ChildApiError as e:
            logger.warning("could not update the status of %s: %s", owner, e)


_default_settings = OperatorSettings()
register(kopf.get_default_registry(), _default_settings)
