"""Helpers for the operator tests: CRD + examples on disk, a kmock cluster, the real kopf operator on it.

(Not named conftest: tests/conftest.py owns that module name.)"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import pathlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import kmock as kmock_lib
import kopf
import pytest
import yaml
from asr_operator.handlers import register
from asr_operator.settings import OperatorSettings
from kopf.testing import KopfRunner

ROOT = pathlib.Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "asrdeployments.yaml"
CHART_CRD_PATH = ROOT / "charts" / "asr-platform" / "crds" / "asrdeployments.yaml"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
NS = "asr"

ASRD = "asr-platform.io/v1alpha1/asrdeployments"
CHILD_RESOURCES = {
    "v1/configmaps": "ConfigMap",
    "v1/services": "Service",
    "apps/v1/deployments": "Deployment",
    "policy/v1/poddisruptionbudgets": "PodDisruptionBudget",
    "keda.sh/v1alpha1/scaledobjects": "ScaledObject",
    "http.keda.sh/v1alpha1/httpscaledobjects": "HTTPScaledObject",
    "autoscaling/v2/horizontalpodautoscalers": "HorizontalPodAutoscaler",
    "monitoring.coreos.com/v1/servicemonitors": "ServiceMonitor",
}
VERBS = {"get", "list", "watch", "create", "patch", "update", "delete"}


def load_example(path: pathlib.Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


async def wait_for(check: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll `check` (sync, cheap) until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except (KeyError, ValueError) as e:  # kmock raises these for missing/soft-deleted objects
            last_exc, result = e, None
        if result:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_exc!r})")


class Cluster:
    """Helpers around the kmock emulator for one test."""

    def __init__(self, kmock: Any) -> None:
        self.kmock = kmock

    def get(self, resource: str, name: str, namespace: str = NS) -> dict[str, Any] | None:
        try:  # NB: `in kmock.objects` does not parse "group/version/plural" keys; indexing does
            obj = self.kmock.objects[resource, namespace, name]
        except KeyError:
            return None
        return None if obj.deleted else copy.deepcopy(obj.raw)

    def must(self, resource: str, name: str, namespace: str = NS) -> dict[str, Any]:
        obj = self.get(resource, name, namespace)
        assert obj is not None, f"{resource} {namespace}/{name} does not exist"
        return obj

    @staticmethod
    def _path(resource: str, namespace: str, name: str | None = None, sub: str | None = None) -> str:
        parts = resource.split("/")
        base = f"/api/{parts[0]}" if len(parts) == 2 else f"/apis/{parts[0]}/{parts[1]}"
        path = f"{base}/namespaces/{namespace}/{parts[-1]}"
        return path + (f"/{name}" if name else "") + (f"/{sub}" if sub else "")

    async def create(self, resource: str, body: dict[str, Any], namespace: str = NS) -> dict[str, Any]:
        async with self.kmock.post(self._path(resource, namespace), json=body) as resp:
            assert resp.status < 300, await resp.text()
            return dict(await resp.json())

    async def patch(
        self, resource: str, name: str, patch: dict[str, Any], namespace: str = NS, sub: str | None = None
    ) -> dict[str, Any]:
        headers = {"Content-Type": "application/merge-patch+json"}
        async with self.kmock.patch(self._path(resource, namespace, name, sub), json=patch, headers=headers) as r:
            assert r.status < 300, await r.text()
            return dict(await r.json())

    async def delete(self, resource: str, name: str, namespace: str = NS) -> None:
        async with self.kmock.delete(self._path(resource, namespace, name)) as resp:
            assert resp.status < 300, await resp.text()

    def watching(self, plural: str) -> bool:
        return any(
            req.action == kmock_lib.action.WATCH and req.resource is not None and req.resource.plural == plural
            for req in list(self.kmock)
        )


def make_cluster(kmock: Any, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Cluster:
    kmock.resources["v1/namespaces"] = kmock_lib.ResourceInfo(kind="Namespace", namespaced=False, verbs=VERBS)
    kmock.resources["v1/events"] = kmock_lib.ResourceInfo(kind="Event", namespaced=True, verbs=VERBS)
    kmock.resources[ASRD] = kmock_lib.ResourceInfo(
        kind="ASRDeployment",
        singular="asrdeployment",
        namespaced=True,
        verbs=VERBS,
        shortnames={"asrd"},
        subresources={"status", "scale"},
    )
    for resource, kind in CHILD_RESOURCES.items():
        kmock.resources[resource] = kmock_lib.ResourceInfo(kind=kind, namespaced=True, verbs=VERBS)
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kmock", "cluster": {"server": str(kmock.url).rstrip("/")}}],
        "users": [{"name": "test", "user": {"token": "test-token"}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "test", "namespace": NS}}],
        "current-context": "kmock",
    }
    path = tmp_path / "kubeconfig.yaml"
    path.write_text(yaml.safe_dump(kubeconfig))
    monkeypatch.setenv("KUBECONFIG", str(path))
    return Cluster(kmock)


@contextlib.asynccontextmanager
async def run_operator(cluster: Cluster, config: OperatorSettings | None = None) -> AsyncIterator[KopfRunner]:
    """The real operator (fresh registry) in KopfRunner's thread, watching namespace NS of kmock."""
    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry)(kopf.login_with_kubeconfig)
    register(registry, config or OperatorSettings(resync_interval_s=3600))
    settings = kopf.OperatorSettings()
    settings.scanning.disabled = True
    settings.posting.enabled = True
    runner = KopfRunner(["run", "--standalone", "--namespace", NS], registry=registry, settings=settings, timeout=30)
    await asyncio.to_thread(runner.__enter__)
    try:
        await wait_for(
            lambda: cluster.watching("asrdeployments") and cluster.watching("deployments"),
            timeout=15,
            what="the operator's watch requests",
        )
        yield runner
    finally:
        await asyncio.to_thread(runner.__exit__, None, None, None)


def asr_body(name: str, spec: dict[str, Any], generation: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "asr-platform.io/v1alpha1",
        "kind": "ASRDeployment",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"uid-{name}",
            "resourceVersion": "1",
            "generation": generation,
        },
        "spec": spec,
    }
