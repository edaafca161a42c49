"""Pure builders of the autoscaler children: KEDA's ScaledObject or an autoscaling/v2 HPA on the pods' queue
depth, and, for minReplicas 0, the HTTPScaledObject of KEDA's HTTP add-on.

Scale to zero: an idle Deployment at 0 pods has nobody to report a queue depth, so the Prometheus trigger alone
could never bring it back. KEDA's HTTP add-on puts its interceptor (a proxy) in front: a request that arrives
while no pod is ready is held there, counted by the add-on's external scaler, which KEDA reads through an
`external-push` trigger of this same ScaledObject; KEDA scales 0 → 1, the interceptor forwards the request once
an endpoint is ready. The add-on would also write a ScaledObject of its own: the HTTPScaledObject tells it not to
(`skip-scaledobject-creation`), so exactly one ScaledObject, ours, targets the Deployment.
"""

from __future__ import annotations

from typing import Any

from .builders import ASR, LOAD_METRIC, POD_TARGET_LABELS, prometheus_label, startup_budget_s
from .quantity import canonical_quantity as q

HTTP_ADDON_SKIP_SCALEDOBJECT = "httpscaledobject.keda.sh/skip-scaledobject-creation"


def load_query(asr: ASR) -> str:
    a = asr.spec.autoscaling
    if a.prometheus and a.prometheus.query:
        return a.prometheus.query
    # Matched by the pods' labels, not by a pattern of their generated names (a long ASRDeployment name is cut
    # short in its pods' names, and another Deployment's pods may share the prefix).
    matchers = ",".join(
        [f'namespace="{asr.namespace}"', *(f'{prometheus_label(k)}="{asr.selector[k]}"' for k in POD_TARGET_LABELS)]
    )
    # max by (pod): the pods carry prometheus.io/* annotations AND may have a ServiceMonitor; a Prometheus that
    # honours both scrapes each pod twice (two jobs), and a plain sum would count its load twice.
    return f"sum(max by (pod) ({LOAD_METRIC}{{{matchers}}}))"


def _scale_target(asr: ASR) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "name": asr.name}


def _hpa_behavior(asr: ASR) -> dict[str, Any]:
    a = asr.spec.autoscaling
    return {
        "scaleUp": {
            "stabilizationWindowSeconds": a.scale_up_stabilization_seconds,
            "selectPolicy": "Max",
            "policies": [
                {"type": "Pods", "value": 4, "periodSeconds": 60},
                {"type": "Percent", "value": 100, "periodSeconds": 60},
            ],
        },
        "scaleDown": {
            "stabilizationWindowSeconds": a.scale_down_stabilization_seconds,
            "selectPolicy": "Max",
            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
        },
    }


def build_scaledobject(asr: ASR) -> dict[str, Any]:
    a = asr.spec.autoscaling
    server = a.prometheus.server_address if a.prometheus else None
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": asr.metadata("autoscaler"),
        "spec": {
            "scaleTargetRef": _scale_target(asr),
            "minReplicaCount": a.min_replicas,
            "maxReplicaCount": a.max_replicas,
            "pollingInterval": a.polling_interval_seconds,
            "cooldownPeriod": _cooldown_s(asr),
            # A new ScaledObject has never been active: without this KEDA takes a minReplicas 0 Deployment to
            # zero at once, before its first pod has loaded the model (a broken image or model would show only
            # at the first request). One cooldown with that pod up first, as after any request.
            **({"initialCooldownPeriod": _cooldown_s(asr)} if a.scales_to_zero else {}),
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": _hpa_behavior(asr)}},
            "triggers": [
                {
                    "type": "prometheus",
                    "metricType": "AverageValue",
                    "metadata": {
                        "serverAddress": server or "",
                        "query": load_query(asr),
                        "threshold": str(a.target_queue_depth),
                        # No series is an error (a ScaledObject not Ready, the CR's MetricsAvailable False: the
                        # pods are not scraped) — except at zero pods, where no series is the expected answer.
                        "ignoreNullValues": str(a.scales_to_zero).lower(),
                    },
                },
                *([_http_trigger(asr)] if a.scales_to_zero else []),
            ],
        },
    }


def _cooldown_s(asr: ASR) -> int:
    """Idle time before KEDA takes the Deployment to its minimum (0 when it scales to zero)."""
    return max(asr.spec.autoscaling.scale_down_stabilization_seconds, 30)


def _http_trigger(asr: ASR) -> dict[str, Any]:
    """KEDA's push trigger on the HTTP add-on's scaler: active while the interceptor holds or forwards requests
    for this HTTPScaledObject (what wakes a Deployment at zero)."""
    return {
        "type": "external-push",
        "metadata": {
            "scalerAddress": asr.spec.autoscaling.http_addon.scaler_address,
            "httpScaledObject": asr.name,
        },
    }


def http_hosts(asr: ASR) -> list[str]:
    """The Host headers the interceptor routes to this ASRDeployment: its Service's in-cluster names, then
    `autoscaling.httpAddon.hosts`."""
    own = [
        f"{asr.name}.{asr.namespace}",
        f"{asr.name}.{asr.namespace}.svc",
        f"{asr.name}.{asr.namespace}.svc.cluster.local",
    ]
    return own + [h for h in asr.spec.autoscaling.http_addon.hosts if h not in own]


def build_http_scaled_object(asr: ASR) -> dict[str, Any]:
    """The HTTP add-on's routing and cold-start rule for this ASRDeployment (minReplicas 0 only). The interceptor
    holds a request for up to a new pod's startup budget, and waits for response headers up to the request
    timeout (its defaults, 20 s and 0.5 s, are far below a model load and a long transcription)."""
    a, s = asr.spec.autoscaling, asr.spec
    meta = asr.metadata("autoscaler")
    meta["annotations"] = {HTTP_ADDON_SKIP_SCALEDOBJECT: "true"}  # ours (build_scaledobject) is the one
    return {
        "apiVersion": "http.keda.sh/v1alpha1",
        "kind": "HTTPScaledObject",
        "metadata": meta,
        "spec": {
            "hosts": http_hosts(asr),
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": asr.name,
                "service": asr.name,
                "port": s.service.port,
            },
            "replicas": {"min": 0, "max": a.max_replicas},
            # Requests in flight per pod the add-on's own metric aims at: the queue-depth target (the Prometheus
            # trigger, which sees the batches, decides above one pod; this one mainly wakes the Deployment).
            "scalingMetric": {"concurrency": {"targetValue": a.target_queue_depth}},
            "scaledownPeriod": _cooldown_s(asr),
            "timeouts": {
                "conditionWait": f"{startup_budget_s(s)}s",
                "responseHeader": f"{s.limits.request_timeout_seconds}s",
            },
        },
    }


def build_hpa(asr: ASR) -> dict[str, Any]:
    a = asr.spec.autoscaling
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": asr.metadata("autoscaler"),
        "spec": {
            "scaleTargetRef": _scale_target(asr),
            "minReplicas": a.min_replicas,
            "maxReplicas": a.max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": LOAD_METRIC},
                        "target": {"type": "AverageValue", "averageValue": q(a.target_queue_depth)},
                    },
                }
            ],
            "behavior": _hpa_behavior(asr),
        },
    }
