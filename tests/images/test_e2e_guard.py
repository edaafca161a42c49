"""The e2e suite's guards, checked without a cluster: which kube context it may use (e2e/safety.py), why it
skips, and that a refused context stops the run before any kubectl/helm call (a real pytest run of e2e/ with
stub tools on PATH that record every call)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]

_spec = importlib.util.spec_from_file_location("e2e_safety_under_test", ROOT / "e2e" / "safety.py")
assert _spec and _spec.loader
safety = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = safety  # dataclasses look their module up while the class is created
_spec.loader.exec_module(safety)


def write_kubeconfig(path: Path, contexts: list[str], current: str | None) -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": c, "cluster": {"server": "https://127.0.0.1:1"}} for c in contexts],
        "users": [{"name": "u", "user": {}}],
        "contexts": [{"name": c, "context": {"cluster": c, "user": "u"}} for c in contexts],
        "current-context": current,
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def test_default_is_the_local_cluster_with_a_real_node() -> None:
    t = safety.choose_target({})
    assert (t.mode, t.context, t.kubeconfig) == ("local", "asr-local", None)
    assert safety.choose_target({"E2E_CONTEXT": "asr-local"}).context == "asr-local"
    with pytest.raises(safety.RefusedContext, match="local mode only uses"):
        safety.choose_target({"E2E_CONTEXT": "kind-other"})


def test_the_real_node_needs_root_and_an_explicit_yes() -> None:
    assert "needs root" in (safety.may_change_this_machine({"CI": "1"}, euid=lambda: 1000) or "")
    refused = safety.may_change_this_machine({}, euid=lambda: 0) or ""
    assert "ASR_E2E_REAL_NODE=1" in refused, refused
    assert safety.may_change_this_machine({"ASR_E2E_REAL_NODE": "1"}, euid=lambda: 0) is None
    assert safety.may_change_this_machine({"CI": "true"}, euid=lambda: 0) is None
    assert safety.may_change_this_machine({"ASR_E2E_REAL_NODE": "0"}, euid=lambda: 0) is not None


def test_external_context_needs_the_explicit_opt_in(tmp_path: Path) -> None:
    kc = write_kubeconfig(tmp_path / "kc", ["prod", "staging-e2e"], current="prod")
    with pytest.raises(safety.RefusedContext, match="E2E_ALLOW_CONTEXT=prod"):
        safety.choose_target({"E2E_KUBECONFIG": str(kc)})
    with pytest.raises(safety.RefusedContext, match="refusing kube context 'prod'"):
        safety.choose_target({"E2E_KUBECONFIG": str(kc), "E2E_ALLOW_CONTEXT": "staging-e2e"})
    # The opt-in names the context actually used: E2E_CONTEXT, else current-context.
    with pytest.raises(safety.RefusedContext):
        safety.choose_target({"E2E_KUBECONFIG": str(kc), "E2E_CONTEXT": "staging-e2e", "E2E_ALLOW_CONTEXT": "prod"})
    t = safety.choose_target(
        {"E2E_KUBECONFIG": str(kc), "E2E_CONTEXT": "staging-e2e", "E2E_ALLOW_CONTEXT": "staging-e2e"}
    )
    assert (t.mode, t.context, t.kubeconfig) == ("kubeconfig", "staging-e2e", kc)
    assert safety.choose_target({"E2E_KUBECONFIG": str(kc), "E2E_ALLOW_CONTEXT": "prod"}).context == "prod"


def test_external_kubeconfig_problems_are_refused(tmp_path: Path) -> None:
    with pytest.raises(safety.RefusedContext, match="not a file"):
        safety.choose_target({"E2E_KUBECONFIG": str(tmp_path / "missing"), "E2E_ALLOW_CONTEXT": "x"})
    kc = write_kubeconfig(tmp_path / "kc", ["a"], current=None)
    with pytest.raises(safety.RefusedContext, match="no current-context"):
        safety.choose_target({"E2E_KUBECONFIG": str(kc), "E2E_ALLOW_CONTEXT": "a"})
    with pytest.raises(safety.RefusedContext, match="has no context 'b'"):
        safety.choose_target({"E2E_KUBECONFIG": str(kc), "E2E_CONTEXT": "b", "E2E_ALLOW_CONTEXT": "b"})
    with pytest.raises(safety.RefusedContext, match="has no context 'kind-asr-e2e'"):
        safety.check_kubeconfig_is(kc, "kind-asr-e2e")


def _which(present: set[str]):
    return lambda name: f"/bin/{name}" if name in present else None


def test_preflight_names_every_missing_piece() -> None:
    everything = set(safety.LOCAL_TOOLS)
    assert safety.preflight({}, _which(everything), lambda env: None) == []
    reasons = safety.preflight({}, _which(everything - {"containerd", "buildah"}), lambda env: None)
    assert reasons == ["not found on PATH: buildah, containerd (apt-get install; see .ci/run)"]
    # The machine's refusal comes first, with everything else that is missing.
    reasons = safety.preflight({}, _which(everything - {"podman"}), lambda env: "not here (x)")
    assert reasons == ["not here (x)", "not found on PATH: podman (apt-get install; see .ci/run)"]


def test_preflight_external_cluster_needs_a_way_to_get_images(tmp_path: Path) -> None:
    env = {"E2E_KUBECONFIG": "kc"}
    tools = {"buildah", "podman", "kubectl", "helm"}
    asked = []
    reasons = safety.preflight(env, _which(tools), lambda env: asked.append(1))
    assert len(reasons) == 1 and "E2E_IMAGE_REGISTRY" in reasons[0]
    assert not asked, "an external cluster does not touch this machine's network"
    assert safety.preflight({**env, "E2E_IMAGE_REGISTRY": "r"}, _which(tools), lambda env: None) == []
    prebuilt = {**env, "E2E_INFERENCE_IMAGE": "r/i:1", "E2E_OPERATOR_IMAGE": "r/o:1"}
    # Prebuilt images + an external cluster: no image tooling is needed.
    assert safety.preflight(prebuilt, _which({"kubectl", "helm"}), lambda env: "x") == []


def _run_e2e(tmp_path: Path, env_extra: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], Path]:
    """pytest on e2e/ with only stub tools on PATH; each stub appends its argv to calls.log and fails."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    for tool in ("kubectl", "helm"):
        stub = bin_dir / tool
        stub.write_text(f'#!/bin/sh\necho "{tool} $*" >> "{log}"\nexit 1\n')
        stub.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("E2E_", "KUBECONFIG", "ASR_E2E_"))}
    env.pop("CI", None)
    env.update({"PATH": str(bin_dir), **env_extra})
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-ra", "-p", "no:cacheprovider", "e2e"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return proc, log


def test_e2e_run_refuses_an_unapproved_context_before_touching_it(tmp_path: Path) -> None:
    kc = write_kubeconfig(tmp_path / "kc", ["prod"], current="prod")
    proc, log = _run_e2e(
        tmp_path,
        {"E2E_KUBECONFIG": str(kc), "E2E_INFERENCE_IMAGE": "r/i:1", "E2E_OPERATOR_IMAGE": "r/o:1"},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 4, out  # pytest's usage-error exit code: nothing ran
    assert "refusing kube context 'prod'" in out, out
    assert not log.exists(), f"kubectl/helm were called: {log.read_text()}"


def test_e2e_run_skips_with_the_reason_when_tools_are_missing(tmp_path: Path) -> None:
    proc, log = _run_e2e(tmp_path, {})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert " passed" not in out and " failed" not in out and " error" not in out, out
    assert "skipped" in out and "not found on PATH: buildah, podman" in out, out
    assert not log.exists(), f"kubectl/helm were called: {log.read_text()}"


def test_e2e_run_under_ci_fails_instead_of_skipping(tmp_path: Path) -> None:
    proc, log = _run_e2e(tmp_path, {"CI": "1"})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 4, out  # a usage error: nothing ran, and CI sees a failure
    assert "CI must run the e2e suite" in out and "not found on PATH" in out, out
    assert not log.exists(), f"kubectl/helm were called: {log.read_text()}"
