"""The chart's life on the real control plane, in namespaced mode: `helm install` with watch namespaces (a Role per
namespace, no cluster-wide grant of children), an ASRDeployment from the chart's values reconciled and one outside
the watched namespaces ignored, `helm upgrade` with changed values, `helm test`, `helm uninstall` with the CR
present. The operator runs as the release's ServiceAccount: any 403 fails the test (start_operator's teardown).

`helm test` for real: the local cluster's nodes are kwok fakes, which do not run containers. The test pods' own
commands (`curl ... <in-cluster URL>`) run here instead, with the Service names resolved to the processes that stand
in for the pods (the operator process for its Service, an `asr-serve` for the ASRDeployment's Service, on the port
the spec gives), and each pod's phase is set from its command's exit code, as a kubelet would.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import threading
import urllib.parse
import uuid
from typing import Any

import yaml
from live_server import asr_serve, free_port
from localkube import REPO, Kube, StartOperator, owned_by, wait_for, wait_ready

CHART = REPO / "charts" / "asr-platform"


def _run_test_pod_command(pod: dict[str, Any]) -> int:
    """The pod's curl command, run here with its URL's host resolved to loopback. Returns curl's exit code."""
    command = list(pod["spec"]["containers"][0]["command"])
    url = urllib.parse.urlsplit(command[-1])
    assert command[0] == "curl" and url.hostname and url.port, command
    resolve = ["--resolve", f"{url.hostname}:{url.port}:127.0.0.1"]
    return subprocess.run([command[0], *resolve, *command[1:]], capture_output=True, timeout=120).returncode


def _complete_test_pods(kube: Kube, namespace: str, done: dict[str, int], stop: threading.Event) -> None:
    """Stand in for the kubelet of the helm test pods until `stop`: run each one's command once, then set the pod's
    phase from the exit code."""
    while not stop.wait(0.5):
        for pod in kube.list("pods", namespace, "app.kubernetes.io/component=test"):
            name = pod["metadata"]["name"]
            if name in done or (pod.get("status") or {}).get("phase") != "Running":
                continue
            done[name] = code = _run_test_pod_command(pod)
            terminated = {"exitCode": code, "reason": "Completed" if code == 0 else "Error"}
            status = {
                "phase": "Succeeded" if code == 0 else "Failed",
                "containerStatuses": [
                    {
                        "name": "curl",
                        "image": pod["spec"]["containers"][0]["image"],
                        "ready": False,
                        "restartCount": 0,
                        "state": {"terminated": terminated},
                    }
                ],
            }
            kube.kubectl("patch", "pod", name, "-n", namespace, "--subresource=status", "--type=merge",
                         "-p", json.dumps({"status": status}))  # fmt: skip


def _helm_test(kube: Kube, release: str, namespace: str) -> tuple[subprocess.CompletedProcess[str], dict[str, int]]:
    done: dict[str, int] = {}
    stop = threading.Event()
    worker = threading.Thread(target=_complete_test_pods, args=(kube, namespace, done, stop), daemon=True)
    worker.start()
    try:
        result = kube.helm("test", release, "-n", namespace, "--timeout=3m", check=False)
    finally:
        stop.set()
        worker.join(timeout=130)
    return result, done


def test_namespaced_release_install_upgrade_test_uninstall(
    platform: Kube, ns: str, start_operator: StartOperator, tmp_path: pathlib.Path
) -> None:
    suffix = uuid.uuid4().hex[:5]
    release, release_ns, unwatched = f"nsmode-{suffix}", f"nsmode-{suffix}-system", f"unwatched-{suffix}"
    fullname = f"{release}-asr-platform"
    liveness_port = free_port()
    platform.kubectl("create", "namespace", unwatched)
    try:
        # an ASRDeployment in a namespace the release does not watch: applied first, so the operator's initial
        # listing would include it if it watched too much
        ignored = {"apiVersion": "asr-platform.io/v1alpha1", "kind": "ASRDeployment",
                   "metadata": {"name": "ignored", "namespace": unwatched},
                   "spec": {"model": {"source": "builtin:demo"}, "device": "cpu"}}  # fmt: skip
        platform.apply(ignored)
        with asr_serve() as server:  # stands in for the ASRDeployment's pods behind its Service
            service_port = int(server.rsplit(":", 1)[1])
            values = {
                "operator": {"watchNamespaces": [ns], "livenessPort": liveness_port},
                "asrDeployments": [{"name": "demo", "namespace": ns, "spec": {
                    "model": {"source": "builtin:demo"}, "device": "cpu", "service": {"port": service_port}}}],
            }  # fmt: skip
            values_file = tmp_path / "values.yaml"
            values_file.write_text(yaml.safe_dump(values))
            platform.helm("install", release, str(CHART), "-n", release_ns, "--create-namespace",
                          "-f", str(values_file), "--wait", "--timeout=2m")  # fmt: skip
            operator = start_operator(
                watch_namespaces=ns, service_account=fullname, sa_namespace=release_ns,
                extra_env={"ASR_OPERATOR_LIVENESS_PORT": str(liveness_port)},
            )  # fmt: skip

            cr = wait_ready(platform, ns, "demo")
            uid = cr["metadata"]["uid"]
            assert owned_by(platform, ns, "deployment", uid) and owned_by(platform, ns, "service", uid)
            left_alone = platform.get("asrdeployment", "ignored", unwatched) or {}
            assert "status" not in left_alone, left_alone.get("status")
            assert not platform.list("deployments", unwatched)

            # helm upgrade with changed values: the operator's Deployment follows, the CR is the same object
            platform.helm("upgrade", release, str(CHART), "-n", release_ns, "-f", str(values_file),
                          "--set", "operator.logLevel=debug", "--wait", "--timeout=2m")  # fmt: skip
            deployment = platform.get("deployment", f"{fullname}-operator", release_ns) or {}
            env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
            assert env["ASR_OPERATOR_LOG_LEVEL"] == "debug"
            assert (platform.get("asrdeployment", "demo", ns) or {})["metadata"]["uid"] == uid

            # helm test: both test pods' commands, for real, against the operator process and asr-serve
            result, done = _helm_test(platform, release, release_ns)
            assert result.returncode == 0, result.stdout + result.stderr
            assert done == {f"{fullname}-test-healthz": 0, f"{fullname}-test-readyz": 0}, done

        # helm uninstall while the CR exists, with the operator gone as it is during an uninstall: nothing hangs
        operator.stop()
        platform.helm("uninstall", release, "-n", release_ns, "--wait", "--timeout=2m")
        wait_for("the chart's ASRDeployment deleted (not Terminating)",
                 lambda: platform.get("asrdeployment", "demo", ns) is None)  # fmt: skip
        wait_for("its children garbage-collected", lambda: not owned_by(platform, ns, "deployment", uid))
        assert platform.get("asrdeployment", "ignored", unwatched) is not None  # not the chart's: kept
    finally:
        platform.kubectl("delete", "namespace", unwatched, release_ns, "--wait=false", check=False)
