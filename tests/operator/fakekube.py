"""An in-memory stand-in for `asr_operator.kube.Kube` that records every call, for reconcile unit tests.

It can mimic the API server's quantity canonicalisation with a fixed table (independent of the operator's own
canonicaliser), so drift detection is tested against what a real server returns."""

from __future__ import annotations

import copy
from typing import Any

from asr_operator.kube import Kind, is_quantity_path
from asr_operator.objectcache import ObjectCache
from kubernetes.client.exceptions import ApiException

# What kube-apiserver returns for these inputs (k8s.io/apimachinery resource.Quantity.String()).
SERVER_CANONICAL: dict[Any, str] = {1: "1", 2: "2", 8: "8", 1000: "1k", "0.5": "500m", "1024Mi": "1Gi", "1000": "1k"}


def server_canonicalised(obj: Any, path: tuple[str, ...] = ()) -> Any:
    if isinstance(obj, dict):
        return {k: server_canonicalised(v, (*path, k)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [server_canonicalised(v, path) for v in obj]
    if is_quantity_path(path) and not isinstance(obj, bool):
        return SERVER_CANONICAL.get(obj, str(obj))
    return obj


class FakeKube:
    def __init__(self, canonicalise: bool = True) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, str, str]] = []
        self.canonicalise = canonicalise
        self.cache = ObjectCache(frozenset())  # caches nothing: every read is recorded as a call

    def _store(self, kind: Kind, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        body = server_canonicalised(body) if self.canonicalise else copy.deepcopy(body)
        self.objects[kind.kind, namespace, body["metadata"]["name"]] = body
        return copy.deepcopy(body)

    def get(self, kind: Kind, namespace: str, name: str, *, fresh: bool = False) -> dict[str, Any] | None:
        self.calls.append(("get", kind.kind, name))
        obj = self.objects.get((kind.kind, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def list(
        self, kind: Kind, namespace: str, label_selector: str = "", field_selector: str = ""
    ) -> list[dict[str, Any]]:
        self.calls.append(("list", kind.kind, label_selector or field_selector))
        wanted = dict(term.split("=", 1) for term in label_selector.split(",") if term)
        return [
            copy.deepcopy(obj)
            for (k, ns, _), obj in sorted(self.objects.items())
            if k == kind.kind and ns == namespace and wanted.items() <= (obj["metadata"].get("labels") or {}).items()
        ]

    def create(self, kind: Kind, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("create", kind.kind, body["metadata"]["name"]))
        if (kind.kind, namespace, body["metadata"]["name"]) in self.objects:
            raise ApiException(status=409, reason="AlreadyExists")
        return self._store(kind, namespace, body)

    def patch(
        self, kind: Kind, namespace: str, name: str, patch: dict[str, Any], subresource: str | None = None
    ) -> dict[str, Any]:
        self.calls.append(("patch", kind.kind, name))
        live = self.objects[kind.kind, namespace, name]

        def merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
            out = copy.deepcopy(a)
            for k, v in b.items():
                if v is None:
                    out.pop(k, None)
                elif isinstance(v, dict) and isinstance(out.get(k), dict):
                    out[k] = merge(out[k], v)
                else:
                    out[k] = copy.deepcopy(v)
            return out

        return self._store(kind, namespace, merge(live, patch))

    def delete(self, kind: Kind, namespace: str, name: str) -> bool:
        self.calls.append(("delete", kind.kind, name))
        return self.objects.pop((kind.kind, namespace, name), None) is not None

    def writes(self) -> list[tuple[str, str, str]]:
        return [c for c in self.calls if c[0] not in ("get", "list")]
