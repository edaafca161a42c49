"""The operator's cache of ASRDeployments (objectcache.py) and `Kube`'s reads through it."""

from __future__ import annotations

import json
from typing import Any

import kubernetes
import pytest
from asr_operator.kube import KINDS, Kube
from asr_operator.objectcache import ObjectCache
from kubernetes.client.exceptions import ApiException

CR = KINDS["ASRDeployment"]


def cr(rv: int, uid: str = "u1", phase: str = "Pending", name: str = "a") -> dict[str, Any]:
    meta = {"name": name, "namespace": "ns", "uid": uid, "resourceVersion": str(rv)}
    return {"kind": "ASRDeployment", "metadata": meta, "status": {"phase": phase}}


def test_the_newer_copy_wins_whatever_the_order_of_arrival() -> None:
    cache = ObjectCache(frozenset({"ASRDeployment"}))
    cache.observe(cr(12, phase="Ready"))  # a status patch's answer
    cache.observe(cr(11, phase="Pending"))  # the watch event of an earlier write, arriving late
    assert cache.get("ASRDeployment", "ns", "a")["status"]["phase"] == "Ready"  # type: ignore[index]
    cache.observe(cr(13, phase="Degraded"))
    assert cache.get("ASRDeployment", "ns", "a")["status"]["phase"] == "Degraded"  # type: ignore[index]


def test_a_new_incarnation_replaces_the_old_and_an_old_delete_keeps_it() -> None:
    cache = ObjectCache(frozenset({"ASRDeployment"}))
    cache.observe(cr(50, uid="old"))
    cache.observe(cr(7, uid="new"))  # same name, created again: its revision says nothing against the old one
    assert cache.get("ASRDeployment", "ns", "a")["metadata"]["uid"] == "new"  # type: ignore[index]
    cache.forget("ASRDeployment", "ns", "a", uid="old")  # the old one's DELETED event, late
    assert cache.get("ASRDeployment", "ns", "a") is not None
    cache.forget("ASRDeployment", "ns", "a", uid="new")
    assert cache.get("ASRDeployment", "ns", "a") is None


def test_copies_are_private_and_other_kinds_are_not_kept() -> None:
    cache = ObjectCache(frozenset({"ASRDeployment"}))
    obj = cr(1)
    cache.observe(obj)
    obj["status"]["phase"] = "mutated by the caller"
    got = cache.get("ASRDeployment", "ns", "a")
    assert got is not None and got["status"]["phase"] == "Pending"
    got["status"]["phase"] = "mutated again"
    assert cache.get("ASRDeployment", "ns", "a")["status"]["phase"] == "Pending"  # type: ignore[index]
    cache.observe({"kind": "Deployment", "metadata": {"name": "a", "namespace": "ns", "resourceVersion": "2"}})
    assert cache.get("Deployment", "ns", "a") is None and len(cache) == 1


class CountingKube(Kube):
    """`Kube` with its HTTP layer replaced by a dict: counts what reaches the API server."""

    def __init__(self) -> None:
        super().__init__(kubernetes.client.ApiClient(), frozenset({"ASRDeployment"}))
        self.server: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []

    def request(self, method: str, path: str, body: Any = None, content_type: str = "") -> dict[str, Any]:
        self.requests.append((method, path))
        key = path.removesuffix("/status")
        if method == "PATCH":
            obj = self.server[key]
            obj.update(json.loads(json.dumps(body)))
            obj["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)
        if key not in self.server:
            raise ApiException(status=404, reason="NotFound")
        return json.loads(json.dumps(self.server[key]))


def test_kube_reads_a_cached_kind_once_and_keeps_its_own_writes() -> None:
    kube = CountingKube()
    path = CR.path("ns", "a")
    kube.server[path] = cr(5)
    assert kube.get(CR, "ns", "a")["status"]["phase"] == "Pending"  # type: ignore[index]
    assert kube.get(CR, "ns", "a") is not None
    assert kube.requests == [("GET", path)]  # the second read came from the cache
    kube.patch(CR, "ns", "a", {"status": {"phase": "Ready"}}, "status")
    assert kube.get(CR, "ns", "a")["status"]["phase"] == "Ready"  # type: ignore[index]  # the patch's answer
    assert len(kube.requests) == 2
    kube.server[path]["status"] = {"phase": "edited behind the cache's back"}
    assert kube.get(CR, "ns", "a", fresh=True)["status"]["phase"] == "edited behind the cache's back"  # type: ignore[index]
    assert kube.get(CR, "ns", "a")["status"]["phase"] == "edited behind the cache's back"  # type: ignore[index]
    del kube.server[path]
    assert kube.get(CR, "ns", "a", fresh=True) is None
    assert kube.get(CR, "ns", "a") is None  # a 404 forgot it: asked again
    assert kube.requests[-2:] == [("GET", path), ("GET", path)]


@pytest.mark.parametrize("kind", ["Deployment", "Pod"])
def test_kube_never_caches_other_kinds(kind: str) -> None:
    kube = CountingKube()
    path = KINDS[kind].path("ns", "a")
    kube.server[path] = {"kind": kind, "metadata": {"name": "a", "namespace": "ns", "resourceVersion": "1"}}
    kube.get(KINDS[kind], "ns", "a")
    kube.get(KINDS[kind], "ns", "a")
    assert kube.requests == [("GET", path), ("GET", path)]


def test_newest_is_the_cached_copy_when_the_given_one_was_overtaken() -> None:
    """A status computed from an event's body must not regress to it when another thread already saw a newer one."""
    cache = ObjectCache(frozenset({"ASRDeployment"}))
    cache.observe(cr(9, phase="Ready"))
    assert cache.newest(cr(8, phase="Pending"))["status"]["phase"] == "Ready"
    assert cache.newest(cr(10, phase="Degraded"))["status"]["phase"] == "Degraded"
    other = {"kind": "Deployment", "metadata": {"name": "a", "namespace": "ns", "resourceVersion": "1"}}
    assert cache.newest(other) == other  # a kind it does not keep comes back as given


def test_managed_fields_are_not_kept() -> None:
    cache = ObjectCache(frozenset({"ASRDeployment"}))
    obj = cr(1)
    obj["metadata"]["managedFields"] = [{"manager": "kube-controller-manager", "fieldsV1": {"f:status": {}}}]
    cache.observe(obj)
    assert "managedFields" not in cache.get("ASRDeployment", "ns", "a")["metadata"]  # type: ignore[index]
    assert obj["metadata"]["managedFields"]  # the caller's object is left alone
