"""The latest known copy of each object of some kinds, fed by the operator's own watch and its own writes.

Why: every Deployment or pod event of a burst used to re-read its ASRDeployment (the status is recomputed from
it), a GET per event — about half the operator's API calls when 200 CRs arrive at once. kopf already watches the
ASRDeployments, so the handlers hand each watched body to this cache, and `Kube` hands it every object it writes
(a status patch's answer is the newest copy there is). Reads of a cached kind then need the API server only for
an object the watch has not shown yet.

Ordering: a watch event can arrive after the answer of a later write; the copy with the higher resourceVersion
wins (etcd revisions: numbers that only grow within one cluster). A copy of a different uid (deleted and created
again under the same name) always replaces the old one. A DELETED event forgets the object.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping
from typing import Any

Key = tuple[str, str, str]  # (kind, namespace, name)


def _revision(obj: Mapping[str, Any]) -> int | None:
    value = str((obj.get("metadata") or {}).get("resourceVersion"))
    return int(value) if value.isdigit() else None


def _key(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return str(obj.get("kind")), str(meta.get("namespace")), str(meta.get("name"))


class ObjectCache:
    """Thread-safe: the handlers run in kopf's worker threads."""

    def __init__(self, kinds: frozenset[str]) -> None:
        self.kinds = kinds
        self._objects: dict[Key, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """A copy of the newest known object, or None when it is not known (which says nothing about the cluster)."""
        with self._lock:
            obj = self._objects.get((kind, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def observe(self, obj: Mapping[str, Any]) -> None:
        """Keep `obj` unless the cache holds a newer copy of the same object."""
        if obj.get("kind") not in self.kinds:
            return
        key, new = _key(obj), copy.deepcopy(dict(obj))
        # managedFields: often half an object's size, read by nobody here; every copy in and out pays for it
        (new.get("metadata") or {}).pop("managedFields", None)
        with self._lock:
            old = self._objects.get(key)
            if old is not None and _same_uid(old, new):
                old_rv, new_rv = _revision(old), _revision(new)
                if old_rv is not None and new_rv is not None and new_rv < old_rv:
                    return
            self._objects[key] = new

    def newest(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """`obj` after observing it, or the newer copy the cache holds (a status computed from an event's body that
        another thread's newer copy has overtaken would otherwise overwrite a newer status)."""
        self.observe(obj)
        kept = self.get(*_key(obj))
        return kept if kept is not None else copy.deepcopy(dict(obj))

    def forget(self, kind: str, namespace: str, name: str, uid: str | None = None) -> None:
        """Drop the object (of this uid only, when given: a DELETED event of an older incarnation keeps the new one)."""
        with self._lock:
            old = self._objects.get((kind, namespace, name))
            if old is not None and (uid is None or (old.get("metadata") or {}).get("uid") == uid):
                del self._objects[(kind, namespace, name)]

    def __len__(self) -> int:
        with self._lock:
            return len(self._objects)


def _same_uid(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return (a.get("metadata") or {}).get("uid") == (b.get("metadata") or {}).get("uid")
