"""Which cluster the e2e suite may touch, and whether it can run at all here.

Two ways to get a cluster, and nothing else is ever used:

* default: a kind cluster named exactly `asr-e2e` (context `kind-asr-e2e`), created by the suite (or reused if
  one with that name exists: it was made for this suite) with its own kubeconfig file;
* `E2E_KUBECONFIG=<file>`: an existing cluster, only if `E2E_ALLOW_CONTEXT` names the context that will be
  used (`E2E_CONTEXT`, else the file's current-context). Anything else is refused before any command runs.

The user's `KUBECONFIG` and `~/.kube/config` are never read.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

KIND_CLUSTER = "asr-e2e"
KIND_CONTEXT = f"kind-{KIND_CLUSTER}"


class RefusedContext(RuntimeError):
    """The suite will not run against this kube context."""


@dataclass(frozen=True)
class Target:
    mode: str  # "kind" | "kubeconfig"
    context: str
    kubeconfig: Path | None  # None in kind mode until the cluster exists (the suite writes its own file)


def _docker_engine_problem(timeout: float = 30) -> str | None:
    try:
        proc = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"docker engine not reachable (`docker info` did not answer within {timeout:.0f}s)"
    except OSError as e:
        return f"docker client cannot run: {e}"
    if proc.returncode != 0 or not proc.stdout.strip():
        why = (proc.stderr or proc.stdout).strip().splitlines()
        return f"docker engine not reachable (`docker info` exit {proc.returncode}: {why[-1] if why else '?'})"
    return None


def prebuilt_images(env: Mapping[str, str]) -> bool:
    return bool(env.get("E2E_INFERENCE_IMAGE") and env.get("E2E_OPERATOR_IMAGE"))


def preflight(
    env: Mapping[str, str] = os.environ, which=shutil.which, docker_problem=_docker_engine_problem
) -> list[str]:
    """Why the suite cannot run here (empty: it can). Checked before anything touches a cluster."""
    reasons: list[str] = []
    external = bool(env.get("E2E_KUBECONFIG"))
    need_docker = not external or not prebuilt_images(env)
    tools = ["kubectl", "helm"] + ([] if external else ["kind"]) + (["docker"] if need_docker else [])
    missing = [t for t in tools if which(t) is None]
    if missing:
        reasons.append(f"not found on PATH: {', '.join(missing)}")
    if need_docker and "docker" not in missing:
        problem = docker_problem()
        if problem:
            reasons.append(problem)
    if external and not (env.get("E2E_IMAGE_REGISTRY") or prebuilt_images(env)):
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
        if env.get("E2E_CONTEXT") and env["E2E_CONTEXT"] != KIND_CONTEXT:
            raise RefusedContext(
                f"E2E_CONTEXT={env['E2E_CONTEXT']!r} without E2E_KUBECONFIG: the kind mode only uses {KIND_CONTEXT!r}"
            )
        return Target("kind", KIND_CONTEXT, None)
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
