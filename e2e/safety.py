"""Which cluster the e2e suite may touch, and whether it can run at all here.

Two ways to get a cluster, and nothing else is ever used:

* default: the local cluster of tools/cluster with a real node (`cluster.py up --real-node`: containerd, kubelet,
  kube-proxy, a loopback registry; context `asr-local`), started by the suite in its own directory and stopped
  afterwards. It changes this machine (iptables, routes, a bridge, mounts; all put back by `down`), so it runs only
  as root where that is allowed: with `CI` set or `ASR_E2E_REAL_NODE=1`;
* `E2E_KUBECONFIG=<file>`: an existing cluster, only if `E2E_ALLOW_CONTEXT` names the context that will be
  used (`E2E_CONTEXT`, else the file's current-context). Anything else is refused before any command runs.

The user's `KUBECONFIG` and `~/.kube/config` are never read.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

LOCAL_CONTEXT = "asr-local"  # tools/cluster/cluster.py's kubeconfig context
# What the local real node and `make images` need from Debian (kubectl/helm/kubelet come from tools/cluster).
LOCAL_TOOLS = ("buildah", "podman", "mmdebstrap", "containerd", "docker-registry", "iptables")


class RefusedContext(RuntimeError):
    """The suite will not run against this kube context."""


@dataclass(frozen=True)
class Target:
    mode: str  # "local" | "kubeconfig"
    context: str
    kubeconfig: Path | None  # None in local mode until the cluster runs (it writes its own file)


def may_change_this_machine(env: Mapping[str, str] = os.environ, euid: Callable[[], int] = os.geteuid) -> str | None:
    """Why the local real node may not be started here (None: it may)."""
    if euid() != 0:
        return "the local cluster's real node needs root (containerd, kubelet, iptables)"
    if not (env.get("CI") or env.get("ASR_E2E_REAL_NODE") == "1"):
        return (
            "the local cluster's real node changes this machine (iptables, routes, a bridge, mounts; put back "
            "afterwards): set ASR_E2E_REAL_NODE=1 to allow it (CI sets CI)"
        )
    return None


def prebuilt_images(env: Mapping[str, str]) -> bool:
    return bool(env.get("E2E_INFERENCE_IMAGE") and env.get("E2E_OPERATOR_IMAGE"))


def preflight(
    env: Mapping[str, str] = os.environ,
    which: Callable[[str], str | None] = shutil.which,
    machine_problem: Callable[[Mapping[str, str]], str | None] = may_change_this_machine,
) -> list[str]:
    """Why the suite cannot run here (empty: it can). Checked before anything touches a cluster."""
    reasons: list[str] = []
    if not env.get("E2E_KUBECONFIG"):
        problem = machine_problem(env)
        if problem:
            reasons.append(problem)
        missing = [t for t in LOCAL_TOOLS if which(t) is None]
        if missing:
            reasons.append(f"not found on PATH: {', '.join(missing)} (apt-get install; see .ci/run)")
        return reasons
    build = not prebuilt_images(env)
    tools = ["kubectl", "helm"] + (["buildah", "podman"] if build else [])
    missing = [t for t in tools if which(t) is None]
    if missing:
        reasons.append(f"not found on PATH: {', '.join(missing)}")
    if build and not env.get("E2E_IMAGE_REGISTRY"):
        reasons.append(
            "E2E_KUBECONFIG is set but the images cannot reach that cluster: set E2E_IMAGE_REGISTRY (built "
            "images are pushed there) or both E2E_INFERENCE_IMAGE and E2E_OPERATOR_IMAGE (prebuilt, pullable)"
        )
    return reasons


def kubeconfig_contexts(path: Path) -> tuple[list[str], str | None]:
    """(context names, current-context) of a kubeconfig file."""
    data = yaml.safe_load(path.read_text()) or {}
    names = [str(c["name"]) for c in data.get("contexts") or [] if isinstance(c, dict) and c.get("name")]
    current = data.get("current-context")
    return names, str(current) if current else None


def choose_target(env: Mapping[str, str] = os.environ) -> Target:
    """The cluster to use, or RefusedContext. Pure: reads only the env and the E2E_KUBECONFIG file."""
    path = env.get("E2E_KUBECONFIG")
    if not path:
        if env.get("E2E_CONTEXT") and env["E2E_CONTEXT"] != LOCAL_CONTEXT:
            raise RefusedContext(
                f"E2E_CONTEXT={env['E2E_CONTEXT']!r} without E2E_KUBECONFIG: the local mode only uses {LOCAL_CONTEXT!r}"
            )
        return Target("local", LOCAL_CONTEXT, None)
    kubeconfig = Path(path).expanduser()
    if not kubeconfig.is_file():
        raise RefusedContext(f"E2E_KUBECONFIG={path!r} is not a file")
    names, current = kubeconfig_contexts(kubeconfig)
    context = env.get("E2E_CONTEXT") or current
    if not context:
        raise RefusedContext(f"{path}: no current-context and no E2E_CONTEXT")
    if context not in names:
        raise RefusedContext(f"{path}: has no context {context!r} (contexts: {names})")
    allowed = env.get("E2E_ALLOW_CONTEXT", "")
    if allowed != context:
        raise RefusedContext(
            f"refusing kube context {context!r} from {path}: the e2e suite creates namespaces, installs a "
            f"Helm release and CRDs and deletes what it made. Set E2E_ALLOW_CONTEXT={context} to allow this "
            f"context (now {allowed!r})."
        )
    return Target("kubeconfig", context, kubeconfig)


def check_kubeconfig_is(path: Path, context: str) -> None:
    """The kubeconfig file the suite wrote or was given still holds the context it was approved for."""
    names, _ = kubeconfig_contexts(path)
    if context not in names:
        raise RefusedContext(f"{path} has no context {context!r} (contexts: {names})")
