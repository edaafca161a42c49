"""A small REST layer over the kubernetes client (any kind, by path) and create-or-patch with drift detection.

Patches are JSON merge patches (application/merge-patch+json) computed three-way: the desired manifest, plus
`null` for every map key the operator applied last time (kept in the LAST_APPLIED annotation) and no longer
wants. Lists are replaced whole, as merge patch does. A child is patched only when the desired manifest is not
already a subset of the live object (server defaults and fields other controllers own are left alone).
"""

from __future__ import annotations

import copy
import json
import os
import urllib.parse
from dataclasses import dataclass
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from .objectcache import ObjectCache
from .quantity import quantities_equal

LAST_APPLIED = "asr-platform.io/last-applied"


@dataclass(frozen=True)
class Kind:
    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        out = f"{base}/namespaces/{namespace}/{self.plural}"
        if name:
            out += f"/{name}"
        if subresource:
            out += f"/{subresource}"
        return out


KINDS: dict[str, Kind] = {
    k.kind: k
    for k in (
        Kind("", "v1", "configmaps", "ConfigMap"),
        Kind("apps", "v1", "deployments", "Deployment"),
        Kind("", "v1", "services", "Service"),
        Kind("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget"),
        Kind("keda.sh", "v1alpha1", "scaledobjects", "ScaledObject"),
        Kind("http.keda.sh", "v1alpha1", "httpscaledobjects", "HTTPScaledObject"),
        Kind("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler"),
        Kind("monitoring.coreos.com", "v1", "servicemonitors", "ServiceMonitor"),
        Kind("asr-platform.io", "v1alpha1", "asrdeployments", "ASRDeployment"),
        Kind("", "v1", "pods", "Pod"),
        Kind("", "v1", "events", "Event"),
    )
}


class Kube:
    """Synchronous JSON access to any namespaced resource. Raises ApiException on a non-2xx answer.

    Objects of `cached_kinds` are read from an ObjectCache (objectcache.py) when it knows them: it keeps every
    such object this client reads or writes, and whatever the owner of the client feeds it (`observe`/`forget`:
    the operator's watch). `get(..., fresh=True)` asks the API server regardless."""

    def __init__(self, api_client: kubernetes.client.ApiClient, cached_kinds: frozenset[str] = frozenset()) -> None:
        self.api = api_client
        self.cache = ObjectCache(cached_kinds)

    @classmethod
    def from_environment(cls, cached_kinds: frozenset[str] = frozenset(), pool_size: int = 0) -> Kube:
        """In-cluster service account, else the kubeconfig named by $KUBECONFIG (read now, not at import).
        `pool_size`: connections kept open, one per thread that calls (the client's default is 5 × the machine's
        cores, not the pod's: too few on a small node, more than needed on a big one)."""
        configuration = kubernetes.client.Configuration()
        if pool_size:
            configuration.connection_pool_maxsize = pool_size
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config(
                config_file=os.environ.get("KUBECONFIG") or None, client_configuration=configuration
            )
        return cls(kubernetes.client.ApiClient(configuration), cached_kinds)

    def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        req = self.api.param_serialize(
            method=method, resource_path=path, header_params=headers, body=body, auth_settings=["BearerToken"]
        )
        resp = self.api.call_api(*req, _request_timeout=(10, 30))
        resp.read()
        if not 200 <= resp.status <= 299:
            raise ApiException(http_resp=resp, body=(resp.data or b"").decode(errors="replace"))
        data = resp.data
        return json.loads(data) if data else {}

    def get(self, kind: Kind, namespace: str, name: str, *, fresh: bool = False) -> dict[str, Any] | None:
        if not fresh and (known := self.cache.get(kind.kind, namespace, name)) is not None:
            return known
        try:
            return self._observed(self.request("GET", kind.path(namespace, name)))
        except ApiException as e:
            if e.status == 404:
                self.cache.forget(kind.kind, namespace, name)
                return None
            raise

    def _observed(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.cache.observe(obj)
        return obj

    def list(
        self, kind: Kind, namespace: str, label_selector: str = "", field_selector: str = ""
    ) -> list[dict[str, Any]]:
        """The objects of one kind in a namespace that match the selectors (filtered by the API server)."""
        selectors = {"labelSelector": label_selector, "fieldSelector": field_selector}
        query = urllib.parse.urlencode({k: v for k, v in selectors.items() if v})
        path = f"{kind.path(namespace)}?{query}" if query else kind.path(namespace)
        return list(self.request("GET", path).get("items") or [])

    def create(self, kind: Kind, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._observed(self.request("POST", kind.path(namespace), body))

    def patch(
        self, kind: Kind, namespace: str, name: str, patch: dict[str, Any], subresource: str | None = None
    ) -> dict[str, Any]:
        answer = self.request("PATCH", kind.path(namespace, name, subresource), patch, "application/merge-patch+json")
        return self._observed(answer)

    def delete(self, kind: Kind, namespace: str, name: str) -> bool:
        self.cache.forget(kind.kind, namespace, name)
        try:
            self.request("DELETE", kind.path(namespace, name), {"propagationPolicy": "Background"})
        except ApiException as e:
            if e.status == 404:
                return False
            raise
        return True


def is_quantity_path(path: tuple[str, ...]) -> bool:
    """Whether the value at `path` is a resource quantity the API server canonicalises (container resources,
    emptyDir sizeLimit, HPA metric targets)."""
    if len(path) >= 3 and path[-3] == "resources" and path[-2] in ("requests", "limits"):
        return True
    if path and path[-1] == "sizeLimit":
        return True
    return len(path) >= 2 and path[-2] == "target" and path[-1] in ("averageValue", "value")


def is_subset(desired: Any, live: Any, path: tuple[str, ...] = ()) -> bool:
    """True when every map key in `desired` is in `live` with an equal value (lists: same length, each item
    a subset of its counterpart), so defaults the API server adds do not count as drift. Quantities compare
    by value ("0.5" == "500m", 1 == "1"): the server returns them canonicalised."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(
            k in live and is_subset(v, live[k], (*path, str(k))) for k, v in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(desired) == len(live)
            and all(is_subset(d, x, path) for d, x in zip(desired, live, strict=True))
        )
    if isinstance(desired, bool) or isinstance(live, bool):
        return desired is live
    if is_quantity_path(path) and desired != live:
        return quantities_equal(desired, live)
    if isinstance(desired, int | float) and isinstance(live, int | float):
        return float(desired) == float(live)
    return bool(desired == live)


def _removals(last: Any, desired: Any, keep: frozenset[tuple[str, ...]], path: tuple[str, ...]) -> Any:
    """Merge-patch fragment with None for keys of `last` that `desired` no longer has (maps only)."""
    if not isinstance(last, dict) or not isinstance(desired, dict):
        return None
    out: dict[str, Any] = {}
    for key, old in last.items():
        sub = (*path, key)
        if sub in keep:
            continue
        if key not in desired:
            out[key] = None
        else:
            nested = _removals(old, desired[key], keep, sub)
            if nested:
                out[key] = nested
    return out


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def with_last_applied(desired: dict[str, Any]) -> dict[str, Any]:
    """The manifest with the annotation that records it (for removing keys the next time)."""
    out = copy.deepcopy(desired)
    record = json.dumps(desired, sort_keys=True, separators=(",", ":"))
    out.setdefault("metadata", {}).setdefault("annotations", {})[LAST_APPLIED] = record
    return out


def three_way_patch(
    live: dict[str, Any], desired: dict[str, Any], keep: frozenset[tuple[str, ...]] = frozenset()
) -> dict[str, Any]:
    """Merge patch turning `live` into `desired`, also removing map keys set by the previous apply."""
    raw = (live.get("metadata", {}).get("annotations") or {}).get(LAST_APPLIED)
    try:
        last = json.loads(raw) if raw else {}
    except ValueError:
        last = {}
    removals = _removals(last, desired, keep, ()) or {}
    return _merge(removals, with_last_applied(desired))


def strip_path(obj: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    """A copy of `obj` without the key at `path` (e.g. ("spec", "replicas"))."""
    out = copy.deepcopy(obj)
    node: Any = out
    for key in path[:-1]:
        node = node.get(key)
        if not isinstance(node, dict):
            return out
    node.pop(path[-1], None)
    return out
