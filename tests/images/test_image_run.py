"""The CPU inference image, run for real (podman + runc) the way the operator's pod spec says: uid 10001, read-only
root, all capabilities dropped, no privilege escalation, the memory limit, and the pod's emptyDir volumes (/tmp,
/dev/shm, /models, the log directory) as sized tmpfs mounts. Built by `make images`; outside CI, skipped until then.

It must load and warm the embedded demo model, answer /readyz, and transcribe samples/demo.wav over HTTP; a write
outside the volumes (the read-only root) or a missing library fails here, not in the first pod.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from asr_operator.builders import ASR, build_configmap, build_deployment
from asr_operator.spec import parse_spec
from containers import Container, current_image, pod_run_args, podman

ROOT = Path(__file__).resolve().parents[2]
DEMO_SPEC = {
    "model": {"source": "builtin:demo"},
    "device": "cpu",
    "precision": "fp32",
    "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}, "shmSize": "256Mi"},
}
START_TIMEOUT_S = 240  # loading + warm-up of the demo model in a cold container, on a slow shared CPU


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def multipart(fields: dict[str, str], file_field: str, path: Path) -> tuple[bytes, str]:
    boundary = "asrtestboundary7d1f"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()
    ]
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{path.name}"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    )
    body = b"".join(parts) + head.encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, Container]]:
    image = current_image("asr-inference")
    asr = ASR("asr-demo", "default", parse_spec(DEMO_SPEC))
    configmap = build_configmap(asr)
    port = free_port()
    # The host's network namespace (loopback only): the pod's port 8000 may be taken here, so a free one.
    args = pod_run_args(build_deployment(asr, configmap), configmap, image, ASR_PORT=str(port))
    with Container(args) as c:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert c.running(), f"the container exited:\n{c.logs()[-4000:]}"
            try:
                if get(f"{url}/readyz")[0] == 200:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(1)
        else:
            pytest.fail(f"not ready within {START_TIMEOUT_S} s:\n{c.logs()[-4000:]}")
        yield url, c


def test_ready_after_warmup_as_the_operator_runs_it(server: tuple[str, Container]) -> None:
    url, _ = server
    status, body = get(f"{url}/readyz")
    assert status == 200, body
    assert body.get("status") == "ready" and body.get("device") == "cpu", body
    assert body.get("model") == "asr-demo" and body.get("family") == "sensevoice", body
    assert get(f"{url}/healthz")[0] == 200


def test_transcribes_the_demo_sample(server: tuple[str, Container]) -> None:
    url, c = server
    body, content_type = multipart({"model": "demo"}, "file", ROOT / "samples" / "demo.wav")
    req = urllib.request.Request(
        f"{url}/v1/audio/transcriptions", data=body, headers={"Content-Type": content_type}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        text = json.loads(r.read())["text"]
    assert text.strip().lower().startswith("hello world"), (text, c.logs()[-2000:])


def test_runs_as_the_pod_user_on_a_read_only_root(server: tuple[str, Container]) -> None:
    _, c = server
    ids = podman("exec", c.name, "id", "-u").stdout.strip()
    assert ids == "10001", ids
    denied = podman("exec", c.name, "sh", "-c", "touch /opt/venv/x 2>&1; echo rc=$?", check=False).stdout
    assert "Read-only file system" in denied, denied
    scratch = podman("exec", c.name, "sh", "-c", "touch /tmp/x && echo ok", check=False).stdout
    assert scratch.strip() == "ok", scratch
