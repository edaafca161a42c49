"""The Grafana dashboard and the prometheus-adapter rule reference only metrics the inference server exports."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml
from asr_inference.metrics import metric_names

METRIC = re.compile(r"\basr_[a-z_]+")


@pytest.fixture(scope="module")
def dashboard(chart_dir) -> dict[str, Any]:
    return json.loads((chart_dir / "dashboards" / "asr-inference.json").read_text())


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows nest their panels
    return out


def queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression: panel targets and templating variable queries."""
    exprs = [t["expr"] for p in panels(dashboard) for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


def test_dashboard_references_only_exported_metrics(dashboard):
    exported = metric_names()
    used = {name for expr in queries(dashboard) for name in METRIC.findall(expr)}
    assert used, "no asr_* metric found in the dashboard's queries"
    assert sorted(used - exported) == []


def test_dashboard_has_the_required_panels(dashboard):
    by_title = {p["title"]: [t["expr"] for t in p.get("targets", [])] for p in panels(dashboard)}

    def panel_using(metric: str) -> list[str]:
        return [title for title, exprs in by_title.items() if any(metric in e for e in exprs)]

    assert panel_using("asr_queue_depth")
    assert panel_using("rate(asr_requests_total")
    (latency,) = panel_using("asr_request_duration_seconds_bucket")
    quantiles = {float(q) for e in by_title[latency] for q in re.findall(r"histogram_quantile\(([0-9.]+)", e)}
    assert quantiles == {0.5, 0.95, 0.99}
    assert panel_using("asr_batch_size_bucket")
    assert panel_using("rate(asr_audio_seconds_total")
    assert panel_using("asr_gpu_memory_allocated_bytes")
    assert panel_using("asr_precision_fallback_total")


def test_dashboard_is_well_formed(dashboard):
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids))
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            for var in re.findall(r"\$(\w+)", target["expr"]):
                assert var in variables or var.startswith("__"), (panel["title"], var)
            # PromQL balance check: a missing bracket is the usual hand-editing slip.
            for opening, closing in ("()", "{}", "[]"):
                assert target["expr"].count(opening) == target["expr"].count(closing), target["expr"]


def test_dashboard_configmap_carries_the_file_and_the_sidecar_label(rendered, chart_dir):
    (configmap,) = [
        o for o in rendered["ha-values"] if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("dashboard")
    ]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["namespace"] == "monitoring"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "ASR"}
    (data,) = configmap["data"].values()
    assert json.loads(data) == json.loads((chart_dir / "dashboards" / "asr-inference.json").read_text())
    assert not [o for o in rendered["default"] if o["kind"] == "ConfigMap"]


def test_prometheus_adapter_rule_exposes_queue_depth_as_a_pods_metric(rendered):
    (configmap,) = [
        o
        for o in rendered["ha-values"]
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("prometheus-adapter-rules")
    ]
    (rule,) = yaml.safe_load(configmap["data"]["rules.yaml"])["rules"]
    assert set(METRIC.findall(rule["seriesQuery"])) == {"asr_load"}
    assert "asr_load" in metric_names()
    assert rule["name"]["as"] == "asr_load"
    assert re.fullmatch(rule["name"]["matches"], "asr_load")
    # Pods metric: the series map onto pods (and their namespace).
    assert rule["resources"]["overrides"] == {
        "namespace": {"resource": "namespace"},
        "pod": {"resource": "pod"},
    }
    assert "<<.Series>>" in rule["metricsQuery"] and "<<.GroupBy>>" in rule["metricsQuery"]
