"""The images of `make images` (tools/images/build.py), run with podman the way the operator's pod spec says.

`current_image(name)` is the image built from the sources under test (its content tag), or a skip — a failure
under CI — telling to run `make images`; a stale image never stands in. `pod_run_args` turns the operator's
Deployment + ConfigMap into podman flags: the container's command, env (ConfigMap data, then `env`), user,
read-only root, dropped capabilities, no privilege escalation, memory limit, and each emptyDir as a tmpfs of its
sizeLimit (a Memory emptyDir is a tmpfs in Kubernetes too; a disk one is sized the same here). Networking is the
host's loopback: the server listens on a free port there, so nothing is routed anywhere.

Podman here needs runc with cgroupfs and no default rlimits (FINDINGS: crun and setrlimit fail on this VM); the
containers.conf below says so and is used only by these tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from asr_operator.quantity import parse_quantity
from requirements_check import skip_unless_ci

ROOT = Path(__file__).resolve().parents[1]
_CONTAINERS_CONF = """\
[containers]
default_ulimits = []
[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
"""
_conf_path: Path | None = None


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    global _conf_path
    if _conf_path is None:
        _conf_path = Path(tempfile.mkdtemp(prefix="asr-podman-")) / "containers.conf"
        _conf_path.write_text(_CONTAINERS_CONF)
    env = {**os.environ, "CONTAINERS_CONF": str(_conf_path)}
    return subprocess.run(["podman", *args], check=check, text=True, capture_output=True, timeout=timeout, env=env)


def current_image(name: str) -> str:
    """The local image `name` built from the current sources (content tag), else skip (fail under CI)."""
    if os.geteuid() != 0 or not (shutil.which("podman") and shutil.which("buildah")):
        skip_unless_ci("running the images needs root with podman and buildah (apt-get install podman buildah)")
    tags = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "images" / "build.py"), "--tags"], capture_output=True, text=True
    )
    refs = dict(line.split("=", 1) for line in tags.stdout.split())
    ref = refs.get(name)
    if tags.returncode != 0 or ref is None or podman("image", "exists", ref, check=False).returncode != 0:
        skip_unless_ci(f"{ref or name} is not built from the current sources: run `make images` ({tags.stderr})")
    return ref


def _env(deployment: dict[str, Any], configmap: dict[str, Any]) -> dict[str, str]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    meta = deployment["metadata"]
    field_values = {"metadata.name": f"{meta['name']}-pod", "metadata.namespace": meta.get("namespace", "default")}
    env = dict(configmap["data"])
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            env[e["name"]] = field_values[e["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def _mebibytes(quantity: str) -> int:
    return max(1, int(parse_quantity(quantity)) // 2**20)


def pod_run_args(deployment: dict[str, Any], configmap: dict[str, Any], image: str, **env: str) -> list[str]:
    """podman run flags for the Deployment's one container; `env` overrides (e.g. ASR_PORT on the host network)."""
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    sc = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    args = ["--user", f"{sc['runAsUser']}:{sc['runAsGroup']}", "--network", "host"]
    if sc.get("fsGroup"):
        args += ["--group-add", str(sc["fsGroup"])]
    if sc.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    if sc.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    args += [f"--cap-drop={c}" for c in sc.get("capabilities", {}).get("drop", [])]
    if memory := container.get("resources", {}).get("limits", {}).get("memory"):
        args += ["--memory", f"{_mebibytes(memory)}m"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in container["volumeMounts"]:
        empty = volumes[mount["name"]].get("emptyDir")
        assert empty is not None, f"only emptyDir volumes run here: {volumes[mount['name']]}"
        size = _mebibytes(empty["sizeLimit"]) if "sizeLimit" in empty else 1024
        if mount["mountPath"] == "/dev/shm":
            args += ["--shm-size", f"{size}m"]
        else:  # an emptyDir is world-writable (0777) in Kubernetes: the same here
            args += ["--mount", f"type=tmpfs,destination={mount['mountPath']},tmpfs-size={size}m,tmpfs-mode=1777"]
    for k, v in {**_env(deployment, configmap), **env}.items():
        args += ["--env", f"{k}={v}"]
    if container.get("command"):
        args += ["--entrypoint", container["command"][0]]
    return [*args, image, *container.get("command", [])[1:], *container.get("args", [])]


class Container:
    """A detached container, removed on close; its logs are kept for the failure message."""

    def __init__(self, run_args: list[str]) -> None:
        self.name = f"asr-test-{uuid.uuid4().hex[:8]}"
        podman("run", "-d", "--ulimit", "host", "--name", self.name, *run_args)

    def logs(self) -> str:
        p = podman("logs", self.name, check=False)
        return p.stdout + p.stderr

    def running(self) -> bool:
        p = podman("inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return p.stdout.strip() == "true"

    def close(self) -> None:
        podman("rm", "-f", "-t", "5", self.name, check=False)

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
