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


def test_default_is_the_kind_cluster_made_for_the_suite() -> None:
    t = safety.choose_target({})
    assert (t.mode, t.context, t.kubeconfig) == ("kind", "kind-asr-e2e", None)
    assert safety.choose_target({"E2E_CONTEXT": "kind-asr-e2e"}).context == "kind-asr-e2e"
    with pytest.raises(safety.RefusedContext, match="kind mode only uses"):
        safety.choose_target({"E2E_CONTEXT": "kind-other"})


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
    everything = {"docker", "kind", "kubectl", "helm"}
    assert safety.preflight({}, _which(everything), lambda: None) == []
    reasons = safety.preflight({}, _which({"docker", "kubectl"}), lambda: None)
    assert reasons == ["not found on PATH: helm, kind"]
    # A docker client without a reachable engine is not enough.
    reasons = safety.preflight({}, _which(everything), lambda: "docker engine not reachable (x)")
    assert reasons == ["docker engine not reachable (x)"]
    # Not asked for an engine when the client itself is missing.
    called = []
    safety.preflight({}, _which(everything - {"docker"}), lambda: called.append(1))
    assert not called


def test_preflight_external_cluster_needs_a_way_to_get_images(tmp_path: Path) -> None:
    env = {"E2E_KUBECONFIG": "kc"}
    reasons = safety.preflight(env, _which({"docker", "kubectl", "helm"}), lambda: None)
    assert len(reasons) == 1 and "E2E_IMAGE_REGISTRY" in reasons[0]
    assert (
        safety.preflight({**env, "E2E_IMAGE_REGISTRY": "r"}, _which({"docker", "kubectl", "helm"}), lambda: None) == []
    )
    prebuilt = {**env, "E2E_INFERENCE_IMAGE": "r/i:1", "E2E_OPERATOR_IMAGE": "r/o:1"}
    # Prebuilt images + an external cluster: neither docker nor kind is needed.
    assert safety.preflight(prebuilt, _which({"kubectl", "helm"}), lambda: "no engine") == []


def _run_e2e(tmp_path: Path, env_extra: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], Path]:
    """pytest on e2e/ with only stub tools on PATH; each stub appends its argv to calls.log and fails."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    for tool in ("kubectl", "helm"):
        stub = bin_dir / tool
        stub.write_text(f'#!/bin/sh\necho "{tool} $*" >> "{log}"\nexit 1\n')
        stub.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("E2E_", "KUBECONFIG"))}
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
    assert "skipped" in out and "not found on PATH: kind, docker" in out, out
    assert not log.exists(), f"kubectl/helm were called: {log.read_text()}"
