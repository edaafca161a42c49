"""Helpers of the real-cluster tests: kubectl/helm against the session's control plane, waits, the audit log,
and the operator as a local process authenticated as the chart's ServiceAccount."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
GROUP_VERSION = "asr-platform.io/v1alpha1"
CHILD_KINDS = ("deployment", "service", "configmap", "poddisruptionbudget", "horizontalpodautoscaler", "scaledobject")
T = TypeVar("T")


PLATFORM_NS = "asr-system"
RELEASE = "asr-platform"  # the chart's fullname is then "asr-platform": ServiceAccount asr-platform
OPERATOR_SA = "asr-platform"
OPERATOR_USER = f"system:serviceaccount:{PLATFORM_NS}:{OPERATOR_SA}"


def load_cluster_module() -> Any:
    """tools/cluster/cluster.py (not a package; loaded by path under a name that cannot clash)."""
    spec = importlib.util.spec_from_file_location("asr_local_cluster", REPO / "tools" / "cluster" / "cluster.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class CommandFailed(AssertionError):
    def __init__(self, args: list[str], proc: subprocess.CompletedProcess[str]) -> None:
        super().__init__(f"{' '.join(args)} -> {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        self.proc = proc


@dataclass
class Kube:
    """kubectl and helm bound to one kubeconfig (admin unless told otherwise)."""

    bin: pathlib.Path
    kubeconfig: pathlib.Path
    audit_log: pathlib.Path

    def run(
        self, tool: str, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin / tool), f"--kubeconfig={self.kubeconfig}", *args]
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=180, check=False)
        if check and proc.returncode:
            raise CommandFailed(cmd, proc)
        return proc

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("kubectl", *args, input=input, check=check)

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("helm", *args, check=check)

    def apply(self, obj: dict[str, Any] | str, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        text = obj if isinstance(obj, str) else json.dumps(obj)
        return self.kubectl("apply", "-f", "-", *extra, input=text, check=check)

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        ns = ["-n", namespace] if namespace else []
        proc = self.kubectl("get", kind, name, *ns, "-o", "json", check=False)
        if proc.returncode:
            if "NotFound" in proc.stderr:
                return None
            raise CommandFailed(["kubectl", "get", kind, name], proc)
        return dict(json.loads(proc.stdout))

    def list(self, kind: str, namespace: str, selector: str | None = None) -> list[dict[str, Any]]:
        sel = ["-l", selector] if selector else []
        proc = self.kubectl("get", kind, "-n", namespace, *sel, "-o", "json")
        return list(json.loads(proc.stdout)["items"])

    def token_kubeconfig(self, path: pathlib.Path, service_account: str, namespace: str) -> pathlib.Path:
        """A kubeconfig that authenticates with a fresh token of `service_account` (what a pod would mount)."""
        token = self.kubectl("create", "token", service_account, "-n", namespace, "--duration=3h").stdout.strip()
        admin = yaml.safe_load(self.kubeconfig.read_text())
        cluster = admin["clusters"][0]["cluster"]
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "local", "cluster": cluster}],
            "users": [{"name": service_account, "user": {"token": token}}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": service_account}}],
            "current-context": "local",
        }
        path.write_text(json.dumps(config))
        return path

    def audit_events(self, since: float = 0.0) -> list[dict[str, Any]]:
        """Audit events (ResponseComplete stage) whose request was received at or after `since` (epoch seconds)."""
        events = []
        with open(self.audit_log, encoding="utf-8") as f:
            for line in f:
                ev = json.loads(line)
                if ev.get("stage") != "ResponseComplete":
                    continue
                if _epoch(ev["requestReceivedTimestamp"]) >= since:
                    events.append(ev)
        return events


def _epoch(ts: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def wait_for(what: str, check: Callable[[], T | None], timeout_s: float = 90.0, interval_s: float = 0.5) -> T:
    """Poll `check` until it returns something truthy; fail with `what` (and the last value) after timeout_s."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what} (last: {last!r})")


def load_example(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((REPO / "examples" / f"{name}.yaml").read_text()))


@dataclass
class OperatorProcess:
    """`python -m asr_operator.cli` of this checkout, as the chart's ServiceAccount (RBAC checks every call)."""

    kubeconfig: pathlib.Path
    log_path: pathlib.Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        env = {
            **os.environ,
            "PYTHONPATH": f"{REPO / 'operator'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "KUBECONFIG": str(self.kubeconfig),
            "ASR_OPERATOR_LIVENESS_PORT": "0",
            "ASR_OPERATOR_METRICS_PORT": "0",
            "ASR_OPERATOR_LOG_LEVEL": "info",
            **self.env,
        }
        env.pop("KUBERNETES_SERVICE_HOST", None)  # never take an in-cluster config by accident
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed by the OS on exit
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "asr_operator.cli"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def forbidden_calls(kube: Kube, username: str, since: float) -> list[str]:
    """Every request of `username` that RBAC refused since `since` (from the audit log). A 403 from admission after
    authorization allowed it (NamespaceLifecycle: "unable to create new content in namespace ... being terminated",
    when a test's namespace is deleted under a CR being reconciled) is not an RBAC gap and is left out."""
    return [
        f"{ev['verb']} {ev['requestURI']}: {ev.get('responseStatus', {}).get('message', '')}"
        for ev in kube.audit_events(since)
        if ev["user"]["username"] == username
        and ev.get("responseStatus", {}).get("code") == 403
        and (ev.get("annotations") or {}).get("authorization.k8s.io/decision") != "allow"
    ]


WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}


def owned_by(kube: Kube, namespace: str, kind: str, owner_uid: str) -> list[dict[str, Any]]:
    """Objects of `kind` in `namespace` whose ownerReferences name `owner_uid`."""
    return [
        obj
        for obj in kube.list(kind, namespace)
        if any(ref.get("uid") == owner_uid for ref in obj["metadata"].get("ownerReferences") or [])
    ]


def ready_status(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    """The CR when its status says Ready for its current generation, else None."""
    cr = kube.get("asrdeployment", name, namespace)
    if not cr:
        return None
    status = cr.get("status") or {}
    if status.get("phase") == "Ready" and status.get("observedGeneration") == cr["metadata"]["generation"]:
        return cr
    return None


def wait_ready(kube: Kube, namespace: str, name: str, timeout_s: float = 90.0) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        return ready_status(kube, namespace, name)

    return wait_for(f"ASRDeployment {namespace}/{name} Ready", check, timeout_s)


def operator_writes(kube: Kube, username: str, namespaces: set[str], since: float) -> list[str]:
    """The write requests `username` sent into `namespaces` since `since` (audit log), as 'verb uri' lines."""
    return [
        f"{ev['verb']} {ev['requestURI']}"
        for ev in kube.audit_events(since)
        if ev["user"]["username"] == username
        and ev["verb"] in WRITE_VERBS
        and (ev.get("objectRef") or {}).get("namespace") in namespaces
    ]


# Shared by conftest and the tests: a test module cannot import `conftest` (another directory's wins on sys.path).
def prepare_example(kube: Kube, namespace: str, example: dict[str, Any]) -> dict[str, Any]:
    """What a user creates before applying an example: the PVC it names (bound to a hostPath PV here)."""
    pvc = ((example["spec"].get("model") or {}).get("cache") or {}).get("pvcName")
    if pvc:
        pv = f"{namespace}-{pvc}"[:63]
        kube.apply({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
                    "spec": {"capacity": {"storage": "50Gi"}, "accessModes": ["ReadWriteMany"],
                             "storageClassName": "manual", "hostPath": {"path": f"/tmp/{pv}"},
                             "claimRef": {"namespace": namespace, "name": pvc}}})  # fmt: skip
        kube.apply({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "metadata": {"name": pvc, "namespace": namespace},
                    "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "manual", "volumeName": pv,
                             "resources": {"requests": {"storage": "50Gi"}}}})  # fmt: skip
    example = dict(example)
    example["metadata"] = {**example["metadata"], "namespace": namespace}
    return example


def example_in(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    return prepare_example(kube, namespace, load_example(name))


StartOperator = Callable[..., OperatorProcess]
