"""The real-cluster tests: one local control plane (tools/cluster/cluster.py) per test session, a namespace per test.

Outside CI they skip, with the reason, when Go or the binaries cannot be had (build them once with
`tools/cluster/build.sh`, ~22 min cold on 2 cores); with $CI set they fail instead (.ci/run builds them first).
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))  # localkube.py (no package here)

from localkube import (
    OPERATOR_SA,
    PLATFORM_NS,
    RELEASE,
    REPO,
    Kube,
    OperatorProcess,
    StartOperator,
    forbidden_calls,
    load_cluster_module,
)


def _unavailable(module: Any) -> str | None:
    bin_dir = module.default_bin_dir()
    missing = module.missing_binaries(bin_dir)
    if not missing:
        return None
    if shutil.which("go") is None:
        return f"Go is not installed, so the local control plane cannot be built ({', '.join(missing)} missing)"
    return f"{', '.join(missing)} not built in {bin_dir}: run tools/cluster/build.sh (~22 min once)"


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    """The session's control plane, with the ASRDeployment + kopf CRDs and the examples' prerequisites."""
    module = load_cluster_module()
    reason = _unavailable(module)
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the cluster tests: {reason}")
        pytest.skip(reason)
    cluster = module.Cluster(tmp_path_factory.mktemp("k8s"))
    try:
        cluster.up()
        k = Kube(cluster.bin, cluster.kubeconfig, cluster.audit_log)
        k.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        k.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        # examples/sensevoice-gpu-keda.yaml names this PriorityClass; the Priority admission plugin refuses pods
        # whose class does not exist.
        k.apply({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "asr-high"},
                 "value": 1000})  # fmt: skip
        yield k
    finally:
        cluster.down()


@pytest.fixture(scope="session")
def platform(kube: Kube) -> Kube:
    """The chart installed once, cluster-wide, in asr-system: its ServiceAccount and RBAC are what the operator
    process runs as (its Deployment's pod is a kwok fake; the real operator runs here, see `start_operator`)."""
    kube.helm("install", RELEASE, str(REPO / "charts" / "asr-platform"), "-n", PLATFORM_NS, "--create-namespace",
              "--wait", "--timeout=2m")  # fmt: skip
    return kube


@pytest.fixture()
def ns(kube: Kube, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test; deleted afterwards (and no ASRDeployment in it may hold a finalizer)."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{slug}-{uuid.uuid4().hex[:5]}"
    kube.kubectl("create", "namespace", name)
    yield name
    # Finalizers are not stripped here: an ASRDeployment that holds one would hang `helm uninstall` and namespace
    # deletion whenever the operator is down, so a test that leaves one behind fails.
    held = [cr["metadata"]["name"] for cr in kube.list("asrdeployments", name) if cr["metadata"].get("finalizers")]
    kube.kubectl("delete", "namespace", name, "--wait=false", check=False)
    assert not held, f"ASRDeployments with finalizers left in {name}: {held}"


@pytest.fixture()
def start_operator(platform: Kube, tmp_path: pathlib.Path) -> Iterator[StartOperator]:
    """Start `python -m asr_operator` processes authenticated with a token of a ServiceAccount (default: the
    chart's). On teardown they stop, and any request the API server answered 403 fails the test."""
    started: list[tuple[OperatorProcess, str, bool]] = []
    since = time.time() - 1

    def start(
        *,
        watch_namespaces: str = "",
        service_account: str = OPERATOR_SA,
        sa_namespace: str = PLATFORM_NS,
        peering_name: str = "",
        resync_s: float = 60.0,
        allow_forbidden: bool = False,
        extra_env: dict[str, str] | None = None,
    ) -> OperatorProcess:
        n = len(started)
        kubeconfig = platform.token_kubeconfig(tmp_path / f"operator-{n}.kubeconfig", service_account, sa_namespace)
        env = {
            "ASR_OPERATOR_WATCH_NAMESPACES": watch_namespaces,
            "ASR_OPERATOR_PEERING_NAME": peering_name,
            "ASR_OPERATOR_RESYNC_INTERVAL_S": str(resync_s),
            "POD_ID": f"local-operator-{n}",
            **(extra_env or {}),
        }
        op = OperatorProcess(kubeconfig, tmp_path / f"operator-{n}.log", env).start()
        started.append((op, f"system:serviceaccount:{sa_namespace}:{service_account}", allow_forbidden))
        return op

    yield start
    for op, _, _ in started:
        op.stop()
    for op, user, allow in started:
        print(f"--- {op.log_path} (last 4000 chars)\n{op.log()[-4000:]}")
        if not allow:
            denied = forbidden_calls(platform, user, since)
            assert not denied, f"the API server refused {len(denied)} calls of {user} (RBAC):\n" + "\n".join(
                denied[:10]
            )
