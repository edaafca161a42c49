"""kopf handlers of asr-operator, thin wrappers around `reconcile`.

Run with `asr-operator` or `kopf run -m asr_operator.handlers`.

- create / update / resume of an ASRDeployment → reconcile every child, write the status.
- a timer (ASR_OPERATOR_RESYNC_INTERVAL_S, default 60 s) → the same, as a backstop against missed events.
- events of owned children (label app.kubernetes.io/managed-by=asr-operator) → a child edited or deleted by
  hand is patched back or recreated at once; events of the Deployment also refresh the owner's status.

Replicas and autoscaling: with `spec.autoscaling.enabled` false the operator keeps the Deployment at
`spec.replicas` (the target of the CR's scale subresource). With it true the KEDA ScaledObject or HPA owns
the Deployment's replica count: the operator sets replicas only when it creates the Deployment (spec.replicas
clamped into [minReplicas, maxReplicas]) and never patches it afterwards.

Errors: a spec that passes the schema but cannot work → PermanentError, Degraded condition (reason
InvalidSpec, phase Failed) and a Warning event; API errors → TemporaryError with a delay (Degraded while they
last), except a manifest the API server rejects as invalid (400/422): permanent until the spec changes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import kopf

from .builders import ASR, MANAGED_BY
from .kube import KINDS, Kube
from .metrics import CHILD_REPAIRS_TOTAL, RECONCILE_DURATION, RECONCILE_TOTAL
from .reconcile import ChildApiError, reconcile, repair_child, write_status
from .settings import OperatorSettings
from .spec import GROUP, PLURAL, VERSION, InvalidSpec
from .status import Outcome

CHILD_LABELS = {"app.kubernetes.io/managed-by": MANAGED_BY}
CHILD_KINDS = (
    "ConfigMap",
    "Deployment",
    "Service",
    "PodDisruptionBudget",
    "ScaledObject",
    "HorizontalPodAutoscaler",
    "ServiceMonitor",
)


@contextmanager
def _measured() -> Iterator[dict[str, str]]:
    result = {"result": "error"}
    start = time.perf_counter()
    try:
        yield result
    finally:
        RECONCILE_DURATION.observe(time.perf_counter() - start)
        RECONCILE_TOTAL.labels(result=result["result"]).inc()


def _kube(memo: kopf.Memo) -> Kube:
    kube = getattr(memo, "kube", None)
    if kube is None:
        kube = memo.kube = Kube.from_environment()
    return kube


def run_reconcile(
    *,
    body: kopf.Body,
    memo: kopf.Memo,
    settings: OperatorSettings,
    logger: kopf.Logger,
    post_events: bool,
) -> None:
    """Reconcile, then write the status. Raises kopf's Permanent/TemporaryError."""
    meta = body.get("metadata") or {}
    generation = meta.get("generation")
    name, namespace = str(meta.get("name")), str(meta.get("namespace"))
    kube = _kube(memo)

    def write(outcome: Outcome, asr: ASR | None = None) -> None:
        try:
            write_status(kube, namespace, name, outcome=outcome, generation=generation, asr=asr)
        except ChildApiError as e:
            raise kopf.TemporaryError(f"cannot write the status: {e}", delay=e.retry_delay) from None

    with _measured() as result:
        try:
            asr, _ = reconcile(kube, body, settings.inference_image)
        except InvalidSpec as e:
            result["result"] = "invalid_spec"
            write(Outcome(False, "InvalidSpec", str(e)))
            if post_events:
                kopf.warn(body, reason="InvalidSpec", message=str(e))
            raise kopf.PermanentError(f"invalid spec: {e}") from None
        except ChildApiError as e:
            result["result"] = "error" if e.permanent else "retry"
            write(Outcome(False, e.reason, str(e)))
            if post_events:
                kopf.warn(body, reason=e.reason, message=str(e))
            if e.permanent:
                raise kopf.PermanentError(str(e)) from None
            raise kopf.TemporaryError(str(e), delay=e.retry_delay) from None
        result["result"] = "success"
        write(Outcome(True), asr)
        logger.debug("reconciled %s/%s", namespace, name)


def register(registry: kopf.OperatorRegistry, config: OperatorSettings) -> None:
    """Register every handler on `registry` (a fresh registry per test; the default one for `kopf run`)."""

    @kopf.on.startup(registry=registry)
    def on_startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        settings.persistence.finalizer = f"{GROUP}/finalizer"
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
        settings.posting.level = logging.WARNING
        settings.watching.server_timeout = 300
        settings.execution.max_workers = 8
        if getattr(memo, "kube", None) is None:
            memo.kube = Kube.from_environment()

    def _reconcile(
        body: kopf.Body,
        memo: kopf.Memo,
        logger: kopf.Logger,
        post_events: bool = True,
    ) -> None:
        run_reconcile(
            body=body,
            memo=memo,
            settings=config,
            logger=logger,
            post_events=post_events,
        )

    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry, id="create")
    def on_create(
        spec: kopf.Spec,
        name: str,
        namespace: str | None,
        body: kopf.Body,
        memo: kopf.Memo,
        logger: kopf.Logger,
        **_: Any,
    ) -> None:
        """A new ASRDeployment: create every child."""
        _reconcile(body, memo, logger)

    @kopf.on.update(GROUP, VERSION, PLURAL, registry=registry, id="update")
    def on_update(
        spec: kopf.Spec,
        name: str,
        namespace: str | None,
        body: kopf.Body,
        memo: kopf.Memo,
        logger: kopf.Logger,
        **_: Any,
    ) -> None:
        """A spec (or label/annotation) change: patch the children in place."""
        _reconcile(body, memo, logger)

    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry, id="resume")
    def on_resume(
        spec: kopf.Spec,
        name: str,
        namespace: str | None,
        body: kopf.Body,
        memo: kopf.Memo,
        logger: kopf.Logger,
        **_: Any,
    ) -> None:
        """Operator restart: repair whatever changed while it was away."""
        _reconcile(body, memo, logger)

    resync = config.resync_interval_s

    @kopf.timer(GROUP, VERSION, PLURAL, interval=resync, initial_delay=resync, registry=registry, id="resync")
    def on_timer(
        spec: kopf.Spec,
        name: str,
        namespace: str | None,
        body: kopf.Body,
        memo: kopf.Memo,
        logger: kopf.Logger,
        **_: Any,
    ) -> None:
        """Periodic drift repair; errors were reported by the change handlers, so no events here."""
        try:
            _reconcile(body, memo, logger, post_events=False)
        except kopf.PermanentError as e:
            logger.debug("resync skipped: %s", e)

    for kind_name in CHILD_KINDS:
        kind = KINDS[kind_name]

        @kopf.on.event(
            kind.group,
            kind.version,
            kind.plural,
            labels=CHILD_LABELS,
            registry=registry,
            id=f"child-{kind.plural}",
        )
        def on_child_event(
            type: str | None,
            body: kopf.Body,
            name: str,
            namespace: str | None,
            memo: kopf.Memo,
            logger: kopf.Logger,
            **_: Any,
        ) -> None:
            """An owned child changed: restore it if it drifted or was deleted; refresh status."""
            if type is None:  # the initial listing: the resume handlers reconcile everything anyway
                return
            kube = _kube(memo)
            try:
                repaired = repair_child(kube, body, type == "DELETED", config.inference_image)
            except ChildApiError as e:
                logger.warning("could not restore %s/%s: %s", body.get("kind"), name, e)
                return
            if repaired is None:
                return
            owner, asr, _live, action = repaired
            if action != "unchanged":
                CHILD_REPAIRS_TOTAL.labels(kind=str(body.get("kind"))).inc()
                logger.info("%s %s %s/%s back", action, body.get("kind"), namespace, name)
            if body.get("kind") != "Deployment" or namespace is None:
                return
            try:
                write_status(kube, namespace, owner["metadata"]["name"], outcome=None, generation=None, asr=asr)
            except ChildApiError as e:
                logger.warning("could not update the status: %s", e)


_default_settings = OperatorSettings()
register(kopf.get_default_registry(), _default_settings)
