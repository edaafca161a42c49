"""The operator image (`make images`), run for real with podman against the local control plane: as uid 10001 on a
read-only root with no capabilities, authenticated with the chart's ServiceAccount token (as its pod would be),
it answers its liveness probe and reconciles the demo example to Ready. Every API call it makes is RBAC-checked
by the audit log, as for the operator process of the other tests."""

from __future__ import annotations

import base64
import json
import pathlib
import socket
import time
import urllib.error
import urllib.request

import yaml
from containers import Container, current_image, podman
from localkube import (
    OPERATOR_SA,
    OPERATOR_USER,
    PLATFORM_NS,
    Kube,
    example_in,
    forbidden_calls,
    owned_by,
    wait_ready,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def self_contained_kubeconfig(kube: Kube, path: pathlib.Path) -> pathlib.Path:
    """The ServiceAccount kubeconfig with the CA inlined (the container sees no host paths), readable by 10001."""
    config = json.loads(kube.token_kubeconfig(path, OPERATOR_SA, PLATFORM_NS).read_text())
    cluster = config["clusters"][0]["cluster"]
    if ca_file := cluster.pop("certificate-authority", None):
        ca_path = pathlib.Path(ca_file)
        if not ca_path.is_absolute():
            ca_path = kube.kubeconfig.parent / ca_path
        cluster["certificate-authority-data"] = base64.b64encode(ca_path.read_bytes()).decode()
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o644)
    return path


def liveness(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def test_operator_image_reconciles_as_the_chart_service_account(
    platform: Kube, ns: str, tmp_path: pathlib.Path
) -> None:
    image = current_image("asr-operator")
    usage = podman("run", "--rm", "--ulimit", "host", "--network", "none", image, "--help").stdout
    assert "usage: asr-operator" in usage, usage
    kubeconfig = self_contained_kubeconfig(platform, tmp_path / "operator.kubeconfig")
    port = free_port()
    since = time.time() - 1
    args = [
        *("--user", "10001:10001", "--read-only", "--cap-drop=ALL", "--security-opt", "no-new-privileges"),
        *("--network", "host", "--mount", "type=tmpfs,destination=/tmp,tmpfs-size=64m"),  # the API on loopback
        *("--volume", f"{kubeconfig}:/etc/asr/kubeconfig:ro", "--env", "KUBECONFIG=/etc/asr/kubeconfig"),
        *("--env", f"ASR_OPERATOR_WATCH_NAMESPACES={ns}", "--env", f"ASR_OPERATOR_LIVENESS_PORT={port}"),
        *("--env", "ASR_OPERATOR_METRICS_PORT=0", "--env", "POD_ID=operator-image-test"),
        image,
    ]
    with Container(args) as c:
        deadline = time.monotonic() + 60
        while liveness(port) != 200:
            assert c.running(), c.logs()[-4000:]
            assert time.monotonic() < deadline, f"no liveness within 60 s:\n{c.logs()[-4000:]}"
            time.sleep(0.5)
        obj = example_in(platform, ns, "demo-cpu")
        platform.apply(obj)
        cr = wait_ready(platform, ns, obj["metadata"]["name"])
        (deployment,) = owned_by(platform, ns, "deployment", cr["metadata"]["uid"])
        assert deployment["spec"]["template"]["spec"]["containers"][0]["command"] == ["asr-serve"]
        logs = c.logs()
    denied = forbidden_calls(platform, OPERATOR_USER, since)
    assert not denied, denied
    assert "Traceback" not in logs, logs[-4000:]
