"""Fixtures of the real-cluster suite: the cluster (the local one with a real node and its autoscaling stack, or an
approved E2E_KUBECONFIG context), the two images (`make images`, pushed where the cluster pulls), the Helm
release, a scratch namespace.

Environment:
  ASR_E2E_REAL_NODE=1                              allow the local real node on this machine (CI: `CI` is enough)
  E2E_KUBECONFIG, E2E_CONTEXT, E2E_ALLOW_CONTEXT   use an existing cluster (see safety.py)
  E2E_IMAGE_REGISTRY                               push the built images there (needed with E2E_KUBECONFIG)
  E2E_INFERENCE_IMAGE, E2E_OPERATOR_IMAGE          use these prebuilt images instead of building
  E2E_KEEP=1                                       keep the release and namespace afterwards (external cluster)
  E2E_TIMEOUT_SCALE                                multiply every timeout (slow machines, cold pulls)
  E2E_ARTIFACTS                                    where test_autoscaling.py writes its timelines (e2e-results/)
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e import safety
from e2e.tools import (
    CHART,
    CRD_NAME,
    RELEASE,
    ROOT,
    SYSTEM_NAMESPACE,
    CommandError,
    Helm,
    Image,
    Images,
    Kube,
    run,
    scaled,
)

E2E_DIR = Path(__file__).resolve().parent
# Per-test ceiling (pytest-timeout) for this suite: the first test also pays for the cluster and image pushes.
TEST_TIMEOUT_S = 5400
REAL_NODE_SELECTOR = {"type": "real"}  # the local cluster's real node (kwok's fake nodes run no container)


def _keep() -> bool:
    return os.environ.get("E2E_KEEP", "") not in ("", "0", "false")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mine = [i for i in items if Path(str(i.path)).resolve().is_relative_to(E2E_DIR)]
    if not mine:
        return
    reasons = safety.preflight()
    if not reasons:
        try:
            safety.choose_target()  # refuse before any test or fixture touches a cluster
        except safety.RefusedContext as e:
            raise pytest.UsageError(f"e2e: {e}") from None
    for item in mine:
        item.add_marker(pytest.mark.timeout(scaled(TEST_TIMEOUT_S)))
    if reasons:
        why = "e2e cannot run here: " + "; ".join(reasons)
        if os.environ.get("CI"):  # .ci/run provides every piece: a skip there would hide a suite that never ran
            raise pytest.UsageError(f"CI must run the e2e suite: {why}")
        for item in mine:
            item.add_marker(pytest.mark.skip(reason=why))


# ----------------------------------------------------------------------------------------------------
# Cluster


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """tools/cluster with a real node and the autoscaling stack (local mode), or None for an external cluster."""
    if safety.choose_target().mode != "local":
        yield None
        return
    sys.path.insert(0, str(ROOT / "tools" / "cluster"))  # cluster.py + realnode.py (scripts, not a package)
    import cluster as module

    bin_dir = Path(run(["tools/cluster/build.sh"], timeout=scaled(3600), cwd=ROOT).stdout.split()[-1])
    cluster = module.Cluster(tmp_path_factory.mktemp("cluster"), bin_dir, real_node=True, autoscaling=True)
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"  # its kubectl and helm
    try:
        cluster.up(timeout_s=scaled(300))
        yield cluster
    finally:
        cluster.down()  # drains the node and puts the host back


@pytest.fixture(scope="session")
def stack(local_cluster: Any) -> Any:
    """The local cluster's autoscaling stack (tools/cluster/autoscalers.py: Prometheus, KEDA, prometheus-adapter,
    KEDA's HTTP add-on); the scenarios that drive it skip on an external cluster."""
    if local_cluster is None:
        pytest.skip("runs on the local cluster's own autoscaling stack (KEDA, HTTP add-on, Prometheus; local mode)")
    return local_cluster.autoscalers()


@pytest.fixture(scope="session")
def kube(local_cluster: Any) -> Kube:
    target = safety.choose_target()
    if local_cluster is not None:
        safety.check_kubeconfig_is(local_cluster.kubeconfig, safety.LOCAL_CONTEXT)
        return Kube(local_cluster.kubeconfig, safety.LOCAL_CONTEXT)
    assert target.kubeconfig is not None
    k = Kube(target.kubeconfig, target.context)
    k.kubectl("get", "--raw", "/readyz", timeout=30)
    return k


@pytest.fixture(scope="session")
def node_selector(local_cluster: Any) -> dict[str, str]:
    """Where pods that must really run go: the real node locally; anywhere on an external cluster."""
    return dict(REAL_NODE_SELECTOR) if local_cluster is not None else {}


# ----------------------------------------------------------------------------------------------------
# Images


def _built_images() -> dict[str, str]:
    """`make images` (a no-op when the sources did not change): name -> local content-tagged reference."""
    run([sys.executable, "tools/images/build.py"], timeout=scaled(3600), cwd=ROOT)
    out = run([sys.executable, "tools/images/build.py", "--tags"], timeout=120, cwd=ROOT).stdout
    return dict(line.split("=", 1) for line in out.split())


@pytest.fixture(scope="session")
def images(kube: Kube, local_cluster: Any) -> Images:
    if safety.prebuilt_images(os.environ):
        return Images(Image.parse(os.environ["E2E_INFERENCE_IMAGE"]), Image.parse(os.environ["E2E_OPERATOR_IMAGE"]))
    built = _built_images()
    if local_cluster is not None:
        node = local_cluster.node()
        pushed = {name: node.push(ref, ref.rpartition("/")[2]) for name, ref in built.items()}
    else:
        registry = os.environ["E2E_IMAGE_REGISTRY"].rstrip("/")
        pushed = {name: f"{registry}/{ref.rpartition('/')[2]}" for name, ref in built.items()}
        for name, ref in built.items():
            run(["podman", "push", ref, f"docker://{pushed[name]}"], timeout=scaled(1800))
    return Images(Image.parse(pushed["asr-inference"]), Image.parse(pushed["asr-operator"]))


# ----------------------------------------------------------------------------------------------------
# Helm release + scratch namespace


@pytest.fixture(scope="session")
def platform(kube: Kube, images: Images, node_selector: dict[str, str]) -> Iterator[Kube]:
    """The chart installed as release `asr-e2e`: CRD established, operator Deployment available (the operator
    runs in-cluster: its ServiceAccount token, RBAC, probes)."""
    assert (CHART / "Chart.yaml").is_file(), f"the chart is missing: {CHART}"
    values = {
        "operator.image.repository": images.operator.repository,
        "operator.image.tag": images.operator.tag,
        "operator.image.pullPolicy": "IfNotPresent",
        "inference.image.repository": images.inference.repository,
        "inference.image.tag": images.inference.tag,
        **{f"operator.nodeSelector.{k}": v for k, v in node_selector.items()},
    }
    helm = Helm(kube)
    try:
        helm.upgrade_install(RELEASE, CHART, SYSTEM_NAMESPACE, values, timeout_s=scaled(600))
    except CommandError as e:
        raise AssertionError(f"helm install failed: {e}\n{kube.describe('pods', SYSTEM_NAMESPACE)}") from None
    try:
        kube.kubectl(
            "wait",
            "--for",
            "condition=established",
            f"crd/{CRD_NAME}",
            f"--timeout={int(scaled(60))}s",
            timeout=90,
        )
        yield kube
    finally:
        if not _keep():
            # CRDs from the chart's crds/ stay (Helm never deletes them); a local cluster goes away anyway.
            helm.uninstall(RELEASE, SYSTEM_NAMESPACE, timeout_s=scaled(300))
            kube.kubectl(
                "delete",
                "namespace",
                SYSTEM_NAMESPACE,
                "--ignore-not-found",
                "--wait=true",
                f"--timeout={int(scaled(180))}s",
                timeout=scaled(240),
                check=False,
            )


@pytest.fixture(scope="session")
def namespace(platform: Kube) -> Iterator[str]:
    """A fresh namespace for the test resources; deleted (ASRDeployments first) while the operator runs."""
    name = f"asr-e2e-{secrets.token_hex(4)}"
    platform.kubectl("create", "namespace", name)
    platform.kubectl("label", "namespace", name, "asr-platform.io/e2e=true")
    try:
        yield name
    finally:
        if not _keep():
            platform.kubectl(
                "delete",
                "asrdeployments.asr-platform.io",
                "--all",
                "-n",
                name,
                "--wait=true",
                f"--timeout={int(scaled(180))}s",
                timeout=scaled(240),
                check=False,
            )
            platform.kubectl(
                "delete",
                "namespace",
                name,
                "--wait=true",
                f"--timeout={int(scaled(300))}s",
                timeout=scaled(360),
                check=False,
            )
