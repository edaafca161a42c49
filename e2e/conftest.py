"""Fixtures of the real-cluster suite: cluster (kind `asr-e2e` or an approved E2E_KUBECONFIG context), the two
images (built from this checkout and loaded/pushed, or prebuilt), the Helm release, a scratch namespace.

Environment:
  E2E_KUBECONFIG, E2E_CONTEXT, E2E_ALLOW_CONTEXT   use an existing cluster (see safety.py)
  E2E_IMAGE_REGISTRY                               push built images there (needed with E2E_KUBECONFIG)
  E2E_INFERENCE_IMAGE, E2E_OPERATOR_IMAGE          use these prebuilt images instead of building
  E2E_KIND_NODE_IMAGE                              kind node image (default: kind's own)
  E2E_KEEP=1                                       keep the kind cluster, release and namespace afterwards
  E2E_TIMEOUT_SCALE                                multiply every timeout (slow machines, cold pulls)
  E2E_KEDA=1, E2E_PROMETHEUS_ADDRESS               run the KEDA scale-out test (KEDA + Prometheus installed)
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e import safety
from e2e.tools import (
    CHART,
    CRD_NAME,
    RELEASE,
    SYSTEM_NAMESPACE,
    CommandError,
    Helm,
    Image,
    Images,
    Kube,
    run,
    scaled,
    wait_for,
)

E2E_DIR = Path(__file__).resolve().parent
# Per-test ceiling (pytest-timeout) for this suite: the first test also pays for cluster + image builds.
TEST_TIMEOUT_S = 5400


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
            item.add_marker(pytest.mark.skip(reason="e2e needs a real cluster toolchain: " + "; ".join(reasons)))


# ----------------------------------------------------------------------------------------------------
# Cluster


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    target = safety.choose_target()
    if target.mode == "kubeconfig":
        assert target.kubeconfig is not None
        k = Kube(target.kubeconfig, target.context)
        k.kubectl("get", "--raw", "/readyz", timeout=30)
        yield k
        return

    kubeconfig = tmp_path_factory.mktemp("kind") / "kubeconfig"
    clusters = run(["kind", "get", "clusters"], timeout=60).stdout.split()
    created = safety.KIND_CLUSTER not in clusters
    if created:
        cmd = ["kind", "create", "cluster", "--name", safety.KIND_CLUSTER, "--kubeconfig", str(kubeconfig)]
        cmd += ["--wait", f"{int(scaled(180))}s"]
        if os.environ.get("E2E_KIND_NODE_IMAGE"):
            cmd += ["--image", os.environ["E2E_KIND_NODE_IMAGE"]]
        run(cmd, timeout=scaled(600))
    else:
        print(f"reusing the existing kind cluster {safety.KIND_CLUSTER!r}", file=sys.stderr)
        kubeconfig.write_text(run(["kind", "get", "kubeconfig", "--name", safety.KIND_CLUSTER], timeout=60).stdout)
    safety.check_kubeconfig_is(kubeconfig, safety.KIND_CONTEXT)
    k = Kube(kubeconfig, safety.KIND_CONTEXT)
    try:
        wait_for(
            lambda: k.kubectl("get", "--raw", "/readyz", timeout=15, quiet=True).stdout.strip() == "ok",
            timeout=scaled(180),
            what="the kind API server",
        )
        yield k
    finally:
        if created and not _keep():
            run(
                ["kind", "delete", "cluster", "--name", safety.KIND_CLUSTER, "--kubeconfig", str(kubeconfig)],
                timeout=scaled(300),
                check=False,
            )


# ----------------------------------------------------------------------------------------------------
# Images


@pytest.fixture(scope="session")
def images(kube: Kube) -> Images:
    kind_mode = kube.context == safety.KIND_CONTEXT and not os.environ.get("E2E_KUBECONFIG")
    if safety.prebuilt_images(os.environ):
        got = Images(Image.parse(os.environ["E2E_INFERENCE_IMAGE"]), Image.parse(os.environ["E2E_OPERATOR_IMAGE"]))
        if kind_mode:
            for img in (got.inference, got.operator):
                local = run(["docker", "image", "inspect", img.ref], timeout=60, check=False, quiet=True)
                if local.returncode == 0:  # else the node pulls it
                    run(
                        ["kind", "load", "docker-image", img.ref, "--name", safety.KIND_CLUSTER],
                        timeout=scaled(900),
                    )
        return got

    tag = f"e2e-{time.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(3)}"
    registry = os.environ.get("E2E_IMAGE_REGISTRY", "").rstrip("/")
    prefix = f"{registry}/" if registry else "asr-platform.local/"
    got = Images(Image(f"{prefix}asr-inference", f"{tag}-cpu"), Image(f"{prefix}asr-operator", tag))
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    run(
        ["docker", "build", "-f", "inference/Dockerfile", "--target", "cpu", "-t", got.inference.ref, "."],
        timeout=scaled(3600),
        env=env,
    )
    run(
        ["docker", "build", "-f", "operator/Dockerfile", "-t", got.operator.ref, "."],
        timeout=scaled(1200),
        env=env,
    )
    for img in (got.inference, got.operator):
        if registry:
            run(["docker", "push", img.ref], timeout=scaled(1800))
        elif kind_mode:
            run(["kind", "load", "docker-image", img.ref, "--name", safety.KIND_CLUSTER], timeout=scaled(900))
    return got


# ----------------------------------------------------------------------------------------------------
# Helm release + scratch namespace


@pytest.fixture(scope="session")
def platform(kube: Kube, images: Images) -> Iterator[Kube]:
    """The chart installed as release `asr-e2e`: CRD established, operator Deployment available."""
    assert (CHART / "Chart.yaml").is_file(), f"the chart is missing: {CHART}"
    values = {
        "operator.image.repository": images.operator.repository,
        "operator.image.tag": images.operator.tag,
        "operator.image.pullPolicy": "IfNotPresent",
        "inference.image.repository": images.inference.repository,
        "inference.image.tag": images.inference.tag,
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
            # CRDs from the chart's crds/ stay (Helm never deletes them); the kind cluster goes away anyway.
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
