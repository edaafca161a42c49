"""Subprocess, kubectl and helm wrappers for the e2e suite. Every call has a timeout; every wait is bounded.

kubectl and helm always get an explicit `--kubeconfig` and context: the suite never reads the user's default
kubeconfig or `KUBECONFIG`, so it cannot act on a cluster that was not chosen for it (see `safety.py`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "asr-platform"
RELEASE = "asr-e2e"
SYSTEM_NAMESPACE = "asr-e2e-system"
CRD_NAME = "asrdeployments.asr-platform.io"


@dataclass(frozen=True)
class Image:
    repository: str
    tag: str

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.tag}"

    @classmethod
    def parse(cls, ref: str) -> Image:
        """`repo[:tag]` (a registry port is not a tag); digests are not supported (the chart takes a tag)."""
        if "@" in ref:
            raise ValueError(f"{ref!r}: give a tag, not a digest")
        name, sep, tag = ref.rpartition(":")
        if not sep or "/" in tag:
            return cls(ref, "latest")
        return cls(name, tag)


@dataclass(frozen=True)
class Images:
    inference: Image
    operator: Image


def scaled(seconds: float) -> float:
    """A timeout, multiplied by E2E_TIMEOUT_SCALE (slow clusters, cold image pulls)."""
    try:
        factor = float(os.environ.get("E2E_TIMEOUT_SCALE", "1") or 1)
    except ValueError:
        factor = 1.0
    return seconds * max(factor, 0.1)


class CommandError(RuntimeError):
    pass


def run(
    cmd: Sequence[str],
    *,
    timeout: float,
    check: bool = True,
    input: str | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    quiet: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run a command with a hard timeout; CommandError (with its output) when it fails or times out."""
    if not quiet:
        print(f"$ {shlex.join(cmd)}", file=sys.stderr, flush=True)
    try:
        proc = subprocess.run(
            list(cmd),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd or ROOT,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise CommandError(f"timed out after {timeout:.0f}s: {shlex.join(cmd)}\n{_tail(e.stderr)}") from None
    if check and proc.returncode != 0:
        raise CommandError(
            f"exit {proc.returncode}: {shlex.join(cmd)}\nstdout: {_tail(proc.stdout)}\nstderr: {_tail(proc.stderr)}"
        )
    return proc


def _tail(text: str | bytes | None, n: int = 4000) -> str:
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return text[-n:]


def wait_for(
    fn: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 2.0,
    describe: Callable[[], str] | None = None,
) -> T:
    """Call `fn` until it returns something truthy (returned) or `timeout` seconds pass (TimeoutError).

    Exceptions of `fn` count as "not yet" and the last one is reported. `describe` adds state to the error.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            got = fn()
            if got:
                return got
        except (CommandError, OSError, ValueError, KeyError) as e:
            last_error = e
        if time.monotonic() >= deadline:
            extra = ""
            if describe is not None:
                try:
                    extra = "\n" + describe()
                except Exception as e:  # state for the message only
                    extra = f"\n(could not describe state: {e})"
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}; last error: {last_error}{extra}")
        time.sleep(interval)


@dataclass(frozen=True)
class Kube:
    """kubectl against one kubeconfig file + context, never anything else."""

    kubeconfig: Path
    context: str

    def base(self) -> list[str]:
        return ["kubectl", "--kubeconfig", str(self.kubeconfig), "--context", self.context]

    def kubectl(
        self, *args: str, timeout: float = 60, check: bool = True, input: str | None = None, quiet: bool = False
    ) -> subprocess.CompletedProcess[str]:
        return run([*self.base(), *args], timeout=timeout, check=check, input=input, quiet=quiet)

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The object as JSON, or None when it does not exist."""
        ns = ["-n", namespace] if namespace else []
        proc = self.kubectl("get", kind, name, *ns, "-o", "json", "--ignore-not-found", check=True, quiet=True)
        return json.loads(proc.stdout) if proc.stdout.strip() else None

    def list(self, kind: str, namespace: str | None = None, selector: str | None = None) -> list[dict[str, Any]]:
        args = ["get", kind, "-o", "json"]
        args += ["-n", namespace] if namespace else ["--all-namespaces"]
        if selector:
            args += ["-l", selector]
        return json.loads(self.kubectl(*args, quiet=True).stdout)["items"]

    def apply(self, obj: dict[str, Any], *, dry_run: str | None = None) -> None:
        args = ["apply", "-f", "-"]
        if dry_run:
            args.append(f"--dry-run={dry_run}")
        self.kubectl(*args, input=json.dumps(obj))

    def patch_merge(self, kind: str, name: str, namespace: str, patch: dict[str, Any]) -> None:
        self.kubectl("patch", kind, name, "-n", namespace, "--type", "merge", "-p", json.dumps(patch))

    def describe(self, kind: str, namespace: str) -> str:
        """`kubectl get` + events of a namespace, for error messages."""
        got = self.kubectl("get", kind, "-n", namespace, "-o", "wide", check=False, quiet=True)
        ev = self.kubectl(
            "get", "events", "-n", namespace, "--sort-by=.lastTimestamp", check=False, quiet=True, timeout=30
        )
        return f"{got.stdout}{got.stderr}\nevents:\n{_tail(ev.stdout, 3000)}"

    def logs(self, namespace: str, selector: str, tail: int = 80) -> str:
        proc = self.kubectl(
            "logs",
            "-n",
            namespace,
            "-l",
            selector,
            f"--tail={tail}",
            "--all-containers",
            check=False,
            quiet=True,
        )
        return _tail(proc.stdout + proc.stderr)


@dataclass(frozen=True)
class Helm:
    kube: Kube

    def base(self) -> list[str]:
        return ["helm", "--kubeconfig", str(self.kube.kubeconfig), "--kube-context", self.kube.context]

    def upgrade_install(
        self, release: str, chart: Path, namespace: str, values: dict[str, str], timeout_s: float
    ) -> None:
        sets: list[str] = []
        for k, v in values.items():
            sets += ["--set-string", f"{k}={v}"]
        run(
            [
                *self.base(),
                "upgrade",
                "--install",
                release,
                str(chart),
                "--namespace",
                namespace,
                "--create-namespace",
                "--wait",
                "--timeout",
                f"{int(timeout_s)}s",
                *sets,
            ],
            timeout=timeout_s + 60,
        )

    def uninstall(self, release: str, namespace: str, timeout_s: float) -> None:
        run(
            [
                *self.base(),
                "uninstall",
                release,
                "--namespace",
                namespace,
                "--wait",
                "--timeout",
                f"{int(timeout_s)}s",
            ],
            timeout=timeout_s + 60,
            check=False,
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def port_forward(kube: Kube, namespace: str, target: str, remote_port: int, timeout: float = 60) -> Iterator[str]:
    """`kubectl port-forward <target>` on a free local port; yields the base URL; stops it on exit."""
    local = free_port()
    cmd = [
        *kube.base(),
        "port-forward",
        "-n",
        namespace,
        target,
        f"{local}:{remote_port}",
        "--address",
        "127.0.0.1",
    ]
    print(f"$ {shlex.join(cmd)} &", file=sys.stderr, flush=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:

        def connected() -> bool:
            if proc.poll() is not None:
                out = proc.stdout.read() if proc.stdout else ""
                raise RuntimeError(f"kubectl port-forward exited ({proc.returncode}): {out}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", local), timeout=1):
                return True
            return False

        wait_for(connected, timeout=timeout, what=f"port-forward to {namespace}/{target}", interval=0.5)
        yield f"http://127.0.0.1:{local}"
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()
