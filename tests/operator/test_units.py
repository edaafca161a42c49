"""Unit tests of the non-builder pieces: drift detection + three-way merge patch, status computation, spec
checks beyond the schema, operator settings, CLI and metrics."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from asr_operator import cli
from asr_operator.kube import LAST_APPLIED, Kind, is_subset, strip_path, three_way_patch, with_last_applied
from asr_operator.metrics import RECONCILE_DURATION, RECONCILE_TOTAL
from asr_operator.quantity import canonical_quantity
from asr_operator.settings import OperatorSettings
from asr_operator.spec import InvalidSpec, parse_quantity, parse_spec
from asr_operator.status import Outcome, compute_status, status_changed
from prometheus_client import REGISTRY

# --- drift detection and patches --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "canonical"),
    [
        ("1", "1"), (1, "1"), ("0.5", "500m"), ("1024Mi", "1Gi"), (1000, "1k"), ("1000", "1k"), ("1500", "1500"),
        ("1.5", "1500m"), ("1536Mi", "1536Mi"), ("0.5Gi", "512Mi"), ("0.5Ki", "512"), ("1Ki", "1Ki"), ("0", "0"),
        ("20Gi", "20Gi"), ("1000k", "1M"), ("100m", "100m"), ("0.1", "100m"), ("12000", "12k"), ("2048", "2048"),
        ("1.5Gi", "1536Mi"), ("364Mi", "364Mi"), ("1024Gi", "1Ti"),
    ],
)  # fmt: skip
def test_canonical_quantity_is_what_the_api_server_returns(value: Any, canonical: str) -> None:
    assert canonical_quantity(value) == canonical


@pytest.mark.parametrize(
    ("desired", "live", "expected"),
    [
        ({"a": 1}, {"a": 1, "server": "default"}, True),  # server-added fields are not drift
        ({"a": 1}, {"a": 2}, False),
        ({"a": {"b": [1, 2]}}, {"a": {"b": [1, 2], "c": 3}}, True),
        ({"l": [{"name": "x"}]}, {"l": [{"name": "x", "protocol": "TCP"}]}, True),  # defaults inside list items
        ({"l": [{"name": "x"}]}, {"l": [{"name": "x"}, {"name": "y"}]}, False),  # an extra list item is drift
        ({"a": 1}, {}, False),
        ({"n": 1}, {"n": 1.0}, True),
        ({"b": True}, {"b": 1}, False),
        ({"s": "1"}, {"s": 1}, False),
        # resource quantities compare by value (the API server canonicalises them); other strings do not
        ({"resources": {"limits": {"nvidia.com/gpu": 1}}}, {"resources": {"limits": {"nvidia.com/gpu": "1"}}}, True),
        ({"resources": {"requests": {"cpu": "0.5"}}}, {"resources": {"requests": {"cpu": "500m"}}}, True),
        ({"resources": {"requests": {"memory": "1024Mi"}}}, {"resources": {"requests": {"memory": "1Gi"}}}, True),
        ({"resources": {"requests": {"cpu": "1"}}}, {"resources": {"requests": {"cpu": "2"}}}, False),
        ({"emptyDir": {"sizeLimit": "2048Mi"}}, {"emptyDir": {"sizeLimit": "2Gi"}}, True),
        ({"target": {"averageValue": 1000}}, {"target": {"averageValue": "1k"}}, True),
        ({"data": {"ASR_X": "1000"}}, {"data": {"ASR_X": "1k"}}, False),
    ],
)
def test_is_subset(desired: Any, live: Any, expected: bool) -> None:
    assert is_subset(desired, live) is expected


def test_three_way_patch_removes_keys_the_previous_apply_set_and_keeps_foreign_ones() -> None:
    old = {"metadata": {"name": "x", "labels": {"a": "1", "gone": "1"}}, "spec": {"nodeSelector": {"k": "v"}, "n": 1}}
    live = with_last_applied(old)
    live["metadata"]["labels"]["added-by-someone"] = "1"
    live["spec"]["replicas"] = 5
    new = {"metadata": {"name": "x", "labels": {"a": "2"}}, "spec": {"n": 1}}
    patch = three_way_patch(live, new)
    assert patch["metadata"]["labels"] == {"a": "2", "gone": None}
    assert patch["spec"]["nodeSelector"] is None
    assert "replicas" not in patch["spec"]  # not ours: untouched
    assert json.loads(patch["metadata"]["annotations"][LAST_APPLIED]) == new


def test_three_way_patch_keep_paths_are_never_removed() -> None:
    live = with_last_applied({"spec": {"replicas": 3, "x": 1}})
    patch = three_way_patch(live, {"spec": {"x": 1}}, frozenset({("spec", "replicas")}))
    assert "replicas" not in patch["spec"]
    patch = three_way_patch(live, {"spec": {"x": 1}})
    assert patch["spec"]["replicas"] is None


def test_strip_path_and_kind_paths() -> None:
    assert strip_path({"spec": {"replicas": 1, "a": 2}}, ("spec", "replicas")) == {"spec": {"a": 2}}
    assert strip_path({"spec": None}, ("spec", "replicas")) == {"spec": None}
    assert Kind("", "v1", "services", "Service").path("ns", "s") == "/api/v1/namespaces/ns/services/s"
    k = Kind("asr-platform.io", "v1alpha1", "asrdeployments", "ASRDeployment")
    assert k.path("ns", "a", "status") == "/apis/asr-platform.io/v1alpha1/namespaces/ns/asrdeployments/a/status"
    assert k.api_version == "asr-platform.io/v1alpha1"


# --- status --------------------------------------------------------------------------------------------------


def _dep(replicas: int, ready: int, updated: int, conditions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    status = {"replicas": replicas, "readyReplicas": ready, "updatedReplicas": updated}
    return {"spec": {"replicas": replicas}, "status": {**status, "conditions": conditions or []}}


def _cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


COMMON = {"endpoint": "http://a.ns.svc:8000", "selector": "x=y"}


@pytest.mark.parametrize(
    ("deployment", "outcome", "phase", "ready", "progressing", "degraded"),
    [
        (None, Outcome(True), "Pending", "False", "False", "False"),
        (_dep(2, 0, 2), Outcome(True), "Progressing", "False", "True", "False"),
        (_dep(2, 1, 2), Outcome(True), "Progressing", "True", "True", "False"),
        (_dep(2, 2, 2), Outcome(True), "Ready", "True", "False", "False"),
        (None, Outcome(False, "InvalidSpec", "bad"), "Failed", "False", "False", "True"),
        (_dep(2, 2, 2), Outcome(False, "MissingAPI", "no keda"), "Degraded", "True", "False", "True"),
        (
            _dep(2, 0, 1, [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]),
            Outcome(True),
            "Degraded",
            "False",
            "True",
            "True",
        ),
    ],
)
def test_compute_status(
    deployment: dict[str, Any] | None, outcome: Outcome, phase: str, ready: str, progressing: str, degraded: str
) -> None:
    st = compute_status({}, generation=4, deployment=deployment, outcome=outcome, **COMMON)
    assert st["phase"] == phase
    assert (_cond(st, "Ready")["status"], _cond(st, "Progressing")["status"]) == (ready, progressing)
    assert _cond(st, "Degraded")["status"] == degraded
    assert all(c["observedGeneration"] == 4 for c in st["conditions"])
    # observedGeneration only advances on a successful reconcile.
    assert st.get("observedGeneration") == (4 if outcome.ok else None)
    assert st["endpoint"] == COMMON["endpoint"] and st["selector"] == "x=y"


def test_transition_time_kept_while_a_condition_holds() -> None:
    first = compute_status({}, generation=1, deployment=_dep(1, 0, 1), outcome=Outcome(True), timestamp="T1", **COMMON)
    same = compute_status(
        first, generation=1, deployment=_dep(1, 0, 1), outcome=Outcome(True), timestamp="T2", **COMMON
    )
    flipped = compute_status(
        first, generation=1, deployment=_dep(1, 1, 1), outcome=Outcome(True), timestamp="T3", **COMMON
    )
    assert _cond(same, "Ready")["lastTransitionTime"] == "T1"
    assert not status_changed(first, same)
    assert _cond(flipped, "Ready")["lastTransitionTime"] == "T3"
    assert _cond(flipped, "Degraded")["lastTransitionTime"] == "T1"
    assert status_changed(first, flipped)


def test_deployment_event_keeps_a_reconcile_error_and_observed_generation() -> None:
    failed = compute_status(
        {"observedGeneration": 2}, generation=3, deployment=None, outcome=Outcome(False, "InvalidSpec", "x"), **COMMON
    )
    assert failed["observedGeneration"] == 2
    after_event = compute_status(failed, generation=3, deployment=_dep(1, 1, 1), outcome=None, **COMMON)
    assert _cond(after_event, "Degraded")["reason"] == "InvalidSpec" and after_event["phase"] == "Failed"
    assert after_event["observedGeneration"] == 2 and after_event["readyReplicas"] == 1


# --- spec checks beyond the schema -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("q", "value"), [("1Gi", 2**30), ("500m", 0.5), ("2", 2), ("1.5G", 1.5e9), ("64Mi", 64 * 2**20)]
)
def test_parse_quantity(q: str, value: float) -> None:
    assert float(parse_quantity(q)) == pytest.approx(value)


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ({"requests": {"memory": "16Gi"}, "limits": {"memory": "8Gi"}}, "requests.memory"),
        ({"requests": {"cpu": "4"}, "limits": {"cpu": "2"}}, "requests.cpu"),
        ({"shmSize": "8Gi", "limits": {"memory": "8Gi"}}, "shmSize"),
    ],
)
def test_semantic_errors(resources: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidSpec, match=message):
        parse_spec({"model": {"source": "x"}, "resources": resources})


def test_memory_cache_must_fit_the_memory_limit() -> None:
    with pytest.raises(InvalidSpec, match="Memory"):
        parse_spec({"model": {"source": "x", "cache": {"emptyDir": {"sizeLimit": "9Gi", "medium": "Memory"}}}})


def test_a_length_ratio_under_one_is_invalid_and_zero_means_no_limit() -> None:
    with pytest.raises(InvalidSpec, match="maxLengthRatio"):
        parse_spec({"model": {"source": "x"}, "batching": {"maxLengthRatio": 0.5}})
    assert parse_spec({"model": {"source": "x"}, "batching": {"maxLengthRatio": 0}}).batching.max_length_ratio == 0


def test_schema_level_problems_are_invalid_spec_too() -> None:
    with pytest.raises(InvalidSpec, match="device"):
        parse_spec({"model": {"source": "x"}, "device": "tpu"})
    with pytest.raises(InvalidSpec, match="model"):
        parse_spec({})


def test_gpus_default_follows_the_device() -> None:
    assert parse_spec({"model": {"source": "x"}}).gpus == 1
    assert parse_spec({"model": {"source": "x"}, "device": "cpu"}).gpus == 0
    assert parse_spec({"model": {"source": "x"}, "resources": {"gpus": 1}}).gpus == 1
    assert parse_spec({"model": {"source": "x"}, "resources": {"gpus": 8}}).gpus == 8  # one inference worker each
    with pytest.raises(ValueError, match="less than or equal to 16"):
        parse_spec({"model": {"source": "x"}, "resources": {"gpus": 17}})


# --- settings, CLI, metrics ---------------------------------------------------------------------------------


def test_operator_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "ASR_OPERATOR_WATCH_NAMESPACES": " speech , asr-b,",
        "ASR_OPERATOR_INFERENCE_IMAGE": "reg/asr:2",
        "ASR_OPERATOR_PEERING_NAME": "asr-operator",
        "ASR_OPERATOR_LIVENESS_PORT": "8081",
        "ASR_OPERATOR_METRICS_PORT": "0",
        "ASR_OPERATOR_LOG_LEVEL": "DEBUG",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = OperatorSettings()
    assert s.namespaces == ["speech", "asr-b"] and not s.clusterwide
    assert s.inference_image == "reg/asr:2" and s.peering_name == "asr-operator"
    assert s.liveness_endpoint == "http://0.0.0.0:8081/healthz"
    assert s.metrics_port == 0 and s.log_level == "debug"


def test_operator_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in list(__import__("os").environ):
        if k.startswith("ASR_OPERATOR_"):
            monkeypatch.delenv(k)
    s = OperatorSettings()
    assert s.clusterwide and s.namespaces == []
    assert s.inference_image == "ghcr.io/asr-platform/asr-inference:0.1.0"
    assert s.peering_name == "" and s.liveness_port == 8080 and s.metrics_port == 9090
    assert s.liveness_endpoint == "http://0.0.0.0:8080/healthz"


@pytest.mark.parametrize(
    ("pod_ip", "bind", "liveness"),
    [
        ("10.244.1.7", "0.0.0.0", "http://0.0.0.0:8080/healthz"),
        ("fd00:10:244::7", "::", "http://[::]:8080/healthz"),  # IPv6-only or IPv6-first cluster
        ("", "0.0.0.0", "http://0.0.0.0:8080/healthz"),  # outside a pod
    ],
)
def test_operator_listens_on_the_family_of_its_pod_ip(
    monkeypatch: pytest.MonkeyPatch, pod_ip: str, bind: str, liveness: str
) -> None:
    monkeypatch.setenv("POD_IP", pod_ip)
    monkeypatch.delenv("ASR_OPERATOR_LIVENESS_PORT", raising=False)
    s = OperatorSettings()
    assert (s.bind_address, s.liveness_endpoint) == (bind, liveness)


def test_cli_runs_kopf_with_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(cli.kopf, "run", lambda **kw: calls.append(kw))
    monkeypatch.setenv("ASR_OPERATOR_WATCH_NAMESPACES", "a,b")
    monkeypatch.setenv("ASR_OPERATOR_PEERING_NAME", "")
    monkeypatch.setenv("ASR_OPERATOR_METRICS_PORT", "0")
    assert cli.main([]) == 0
    (kw,) = calls
    assert kw["namespaces"] == ["a", "b"] and kw["clusterwide"] is False
    assert kw["standalone"] is True and kw["peering_name"] is None
    assert kw["liveness_endpoint"] == "http://0.0.0.0:8080/healthz"
    handlers = {h.id for h in kw["registry"]._changing.get_all_handlers()}
    assert handlers == {"create", "update", "resume"}

    calls.clear()
    monkeypatch.setenv("ASR_OPERATOR_WATCH_NAMESPACES", "")
    monkeypatch.setenv("ASR_OPERATOR_PEERING_NAME", "asr")
    cli.main([])
    assert calls[0]["clusterwide"] is True and calls[0]["standalone"] is False and calls[0]["peering_name"] == "asr"
    assert kw["priority"] == 0
    # HA replicas draw distinct priorities: kopf pauses any replica that sees a peer of equal priority
    for _ in range(4):
        cli.main([])
    priorities = [c["priority"] for c in calls]
    assert all(p > 0 for p in priorities) and len(set(priorities)) == len(priorities)


def test_probe_access_lines_stay_out_of_the_log_unless_debugging() -> None:
    access, root = logging.getLogger("aiohttp.access"), logging.getLogger()
    root_level = root.level
    try:
        cli.configure_logging("info")
        assert not access.isEnabledFor(logging.INFO)  # kubelet probes every 20 s would flood it
        assert access.isEnabledFor(logging.WARNING)
        access.setLevel(logging.NOTSET)
        root.setLevel(logging.DEBUG)  # basicConfig does nothing when the root logger has handlers (pytest's)
        cli.configure_logging("debug")
        assert access.isEnabledFor(logging.INFO)
    finally:
        access.setLevel(logging.NOTSET)
        root.setLevel(root_level)


def test_metrics_are_registered_with_the_documented_names() -> None:
    RECONCILE_TOTAL.labels(result="success").inc(0)
    RECONCILE_DURATION.observe(0.0)
    names = {m.name for m in REGISTRY.collect()}
    assert "asr_operator_reconcile" in names  # the counter family (…_total samples)
    assert "asr_operator_reconcile_duration_seconds" in names


def test_a_log_that_is_never_rotated_is_refused() -> None:
    """maxFiles 0 means "never rotate" to Python's RotatingFileHandler: the log volume fills and the pod is evicted."""
    with pytest.raises(InvalidSpec, match=r"max_files|maxFiles"):
        parse_spec({"model": {"source": "x"}, "logging": {"rotation": {"maxFiles": 0}}})
    assert (
        parse_spec({"model": {"source": "x"}, "logging": {"rotation": {"maxFiles": 1}}}).logging.rotation.max_files == 1
    )
