"""Prometheus metrics of the operator (served by cli.main on ASR_OPERATOR_METRICS_PORT)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

RECONCILE_TOTAL = Counter(
    "asr_operator_reconcile_total",
    "ASRDeployment reconciliations by result (success, invalid_spec, retry, error).",
    ["result"],
)
RECONCILE_DURATION = Histogram(
    "asr_operator_reconcile_duration_seconds",
    "Duration of one ASRDeployment reconciliation (all children read and created or patched).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
CHILD_REPAIRS_TOTAL = Counter(
    "asr_operator_child_repairs_total",
    "Children recreated or patched back after a change by hand, by kind.",
    ["kind"],
)
