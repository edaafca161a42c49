"""The Grafana dashboard, the KEDA trigger query and the prometheus-adapter rule, evaluated by a real Prometheus
(Debian's `prometheus` on loopback) that scrapes a real asr-serve under load.

Prometheus scrapes the one server as two targets labelled the way prometheus-operator labels a ServiceMonitor's
targets (namespace, service, pod, container, endpoint, and the pod labels of its podTargetLabels): the
ASRDeployment `asr-demo` and another one, `asr-demo-canary`, whose pod name starts with `asr-demo-` (the KEDA
query must not count it). Every query must
return data, with the labels its `by (...)`/legend name, and values that make sense for the load: a query that
names a missing metric or label returns nothing (or lacks the label) and fails.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml
from asr_inference.metrics import STAGES
from asr_operator.autoscaling import build_scaledobject
from asr_operator.builders import ASR
from asr_operator.spec import parse_spec
from live_server import asr_serve
from load_loop import LoadLoop, StreamLoop
from prometheus_server import PROMETHEUS, PromAPI, run_prometheus, values
from requirements_check import skip_unless_ci

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "charts" / "asr-platform"
DASHBOARD = json.loads((CHART_DIR / "dashboards" / "asr-inference.json").read_text())
SAMPLE = ROOT / "samples" / "demo.wav"
NAMESPACE, SERVICE = "asr-test", "asr-demo"
POD = "asr-demo-5d8f7c9b6-x2k4q"  # <deployment>-<replicaset hash>-<suffix>
OTHER_SERVICE, OTHER_POD = "asr-demo-canary", "asr-demo-canary-6b7c8d9f5-abcde"
MAX_BATCH = 4
LOAD_S = 20
RATE_INTERVAL = "10s"  # Grafana's $__rate_interval: >= 4 scrape intervals (1 s here)


@dataclass
class Observed:
    api: PromAPI
    start: float  # load started
    end: float  # load stopped
    codes: dict[int, int]
    stream_events: dict[str, int]  # realtime server events by type

    def range(self, expr: str) -> list[dict[str, Any]]:
        return self.api.query_range(expr, self.start, self.end)


def _pod_labels(instance: str) -> dict[str, str]:
    """The pod labels the ServiceMonitor's podTargetLabels (and a labelmap of pod labels) put on the series."""
    return {"app_kubernetes_io_name": "asr-inference", "app_kubernetes_io_instance": instance}


def _target(base: str, service: str, pod: str) -> dict[str, Any]:
    labels = {"namespace": NAMESPACE, "service": service, "pod": pod, "container": "asr-serve", "endpoint": "http",
              **_pod_labels(service)}  # fmt: skip
    return {"targets": [base.removeprefix("http://")], "labels": labels}


@pytest.fixture(scope="module")
def observed() -> Iterator[Observed]:
    if not Path(PROMETHEUS).exists():
        reason = f"no prometheus at {PROMETHEUS} (apt-get install -y prometheus)"
        skip_unless_ci(reason)
    with asr_serve("--max-batch-size", str(MAX_BATCH), "--max-wait-ms", "20") as base:
        scrape = {"job_name": "asr-inference", "metrics_path": "/metrics",
                  "static_configs": [_target(base, SERVICE, POD), _target(base, OTHER_SERVICE, OTHER_POD)]}  # fmt: skip
        # the same pod once more, as Prometheus' usual `kubernetes-pods` job (prometheus.io/* annotations, which
        # the operator sets; pod labels mapped) labels it: no service label. Queries must not count the pod twice.
        pod_labels = {"namespace": NAMESPACE, "pod": POD, **_pod_labels(SERVICE)}
        annotations = {"job_name": "kubernetes-pods", "metrics_path": "/metrics", "static_configs": [
            {"targets": [base.removeprefix("http://")], "labels": pod_labels}]}  # fmt: skip
        with run_prometheus([scrape, annotations]) as prom:
            api = PromAPI(prom)
            deadline = time.monotonic() + 60
            while api.targets_up() < 3:
                assert time.monotonic() < deadline, "prometheus never scraped both targets"
                time.sleep(0.5)
            start = time.time()
            with LoadLoop(base, SAMPLE) as load, StreamLoop(base, SAMPLE) as streams:
                time.sleep(LOAD_S)
            end = time.time()
            deadline = time.monotonic() + 60
            while not api.scraped_since(end):  # a scrape of every target after the load, not a guessed sleep
                assert time.monotonic() < deadline, "prometheus scraped nothing after the load"
                time.sleep(0.2)
            yield Observed(api, start + 2, end, dict(load.codes), dict(streams.events))


def substitute(expr: str) -> str:
    """Grafana's variables as the dashboard would fill them for the deployment under test."""
    return (
        expr.replace("$namespace", NAMESPACE)
        .replace("$service", SERVICE)
        .replace("$__rate_interval", RATE_INTERVAL)
        .replace("$__range", f"{LOAD_S}s")
    )


def dashboard_targets() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for panel in DASHBOARD["panels"]:
        for p in [panel, *panel.get("panels", [])]:
            out.extend((f"{p['title']}: {t.get('legendFormat', t['refId'])}", t) for t in p.get("targets", []))
    return out


def expected_labels(target: dict[str, Any]) -> set[str]:
    """Labels the result must carry: those of the aggregation's `by (...)` (minus `le`, which
    histogram_quantile consumes) and every `{{label}}` of the legend."""
    by = {label.strip() for group in re.findall(r"\bby\s*\(([^)]*)\)", target["expr"]) for label in group.split(",")}
    legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
    return (by | legend) - {"le", ""}


def _between(low: float, high: float) -> Callable[[list[float]], bool]:
    return lambda vs: all(low <= v <= high for v in vs)


# What each query's values must look like under the load; the first rule whose pattern is in the expression
# applies. A dashboard query no rule knows fails: add its rule with the panel.
PLAUSIBLE: list[tuple[str, str, Callable[[list[float]], bool]]] = [
    ("asr_model_ready", "the one pod is ready", lambda vs: set(vs) == {1.0}),
    ("asr_load", "queued items and streams under load", lambda vs: min(vs) >= 0 and max(vs) > 0),
    ("asr_queue_depth", "items queue under load", lambda vs: min(vs) >= 0 and max(vs) > 0),
    ("asr_active_streams", "the realtime sessions are open", lambda vs: min(vs) >= 0 and max(vs) >= 1),
    ("asr_streams_rejected_total", "no session refused", lambda vs: set(vs) == {0.0}),
    ("asr_stream_audio_seconds_total", "audio streams in", lambda vs: min(vs) >= 0 and max(vs) > 0),
    ("asr_stream_final_latency_seconds_bucket", "utterance latencies within the buckets", _between(0, 300)),
    ("asr_stream_partials_total", "partials are decoded", lambda vs: min(vs) >= 0 and max(vs) > 0),
    ("asr_inflight_requests", "requests in flight under load", lambda vs: min(vs) >= 0 and max(vs) > 0),
    ("asr_requests_total", "requests are answered", lambda vs: min(vs) >= 0 and max(vs) > 0),
    ("asr_audio_seconds_total", "audio is transcribed", lambda vs: min(vs) >= 0 and max(vs) > 0),
    ("asr_request_duration_seconds_bucket", "latencies within the buckets", lambda vs: _between(1e-4, 300)(vs)),
    ("asr_stage_duration_seconds_bucket", "stage latencies within the buckets", lambda vs: _between(0, 300)(vs)),
    ("histogram_quantile", "batch-size quantiles within 1..max", _between(1, MAX_BATCH)),
    ("asr_batch_size_sum", "mean batch size within 1..max", _between(1, MAX_BATCH)),
    ("asr_batch_size_count", "batches run", lambda vs: min(vs) >= 0 and max(vs) > 0),
    ("asr_gpu_memory", "no GPU memory on CPU", lambda vs: set(vs) == {0.0}),
    ("asr_precision_fallback_total", "fp32 asked, fp32 served", lambda vs: set(vs) == {0.0}),
    ("asr_batch_retries_total", "no batch failed", lambda vs: set(vs) == {0.0}),
    ("asr_device_errors_total", "no device error on a healthy server", lambda vs: set(vs) == {0.0}),
    ("asr_cache_hits_total", "some hits, some misses", lambda vs: _between(0, 1)(vs) and 0 < max(vs) < 1),
    (
        "asr_device_busy_seconds_total",
        "the worker runs batches, at most all the time",
        lambda vs: _between(0, 1.05)(vs) and max(vs) > 0,
    ),
    (
        "asr_thread_cpu_seconds_total",
        "threads use CPU, at most the machine's cores",
        lambda vs: min(vs) >= 0 and 0 < max(vs) <= 64,
    ),
]


@pytest.mark.parametrize(("name", "target"), dashboard_targets(), ids=[n for n, _ in dashboard_targets()])
def test_dashboard_query_returns_labelled_plausible_data(observed: Observed, name: str, target: dict) -> None:
    expr = substitute(target["expr"])
    assert "$" not in expr, f"unknown dashboard variable in {expr}"
    result = observed.range(expr)
    assert result, f"no data for {expr}"
    want = expected_labels(target)
    for series in result:
        assert set(series["metric"]) == want, (expr, series["metric"])
        assert series["metric"].get("service", SERVICE) == SERVICE and series["metric"].get("pod", POD) == POD
    found = values(result)
    assert found, f"only NaN for {expr}"
    meaning, check = next(((m, c) for p, m, c in PLAUSIBLE if p in expr), (None, None))
    assert check is not None, f"no plausibility rule for {expr}"
    assert check(found), f"{meaning}: {expr} gave {sorted(set(found))[:10]} .. {max(found)}"
    if "asr_stage_duration_seconds_bucket" in expr:
        assert {s["metric"]["stage"] for s in result} == set(STAGES)
    if "asr_requests_total" in expr:
        assert "200" in {s["metric"]["code"] for s in result}
    if "asr_device_errors_total" in expr:  # both kinds exported from the start, at 0
        assert {s["metric"]["kind"] for s in result} == {"out_of_memory", "sticky"}


def test_dashboard_variables_list_the_deployments(observed: Observed) -> None:
    found = {}
    for variable in DASHBOARD["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", substitute(query).replace('=~"asr-test"', '="asr-test"'))
        assert match, f"not a label_values() query: {query}"
        selector, label = match.groups()
        found[variable["name"]] = observed.api.label_values(label, selector, observed.start, observed.end)
    assert found == {"namespace": [NAMESPACE], "service": sorted([SERVICE, OTHER_SERVICE])}


def _keda_query() -> str:
    spec = parse_spec({
        "model": {"source": "iic/SenseVoiceSmall"},
        "autoscaling": {"enabled": True, "engine": "keda", "prometheus": {"serverAddress": "http://prom:9090"}},
    })  # fmt: skip
    (trigger,) = build_scaledobject(ASR(name=SERVICE, namespace=NAMESPACE, spec=spec))["spec"]["triggers"]
    return str(trigger["metadata"]["query"])


def test_keda_query_sums_only_its_own_pods_and_sees_the_queue(observed: Observed) -> None:
    query = _keda_query()
    result = observed.range(query)
    assert len(result) == 1 and result[0]["metric"] == {}, result  # KEDA reads one number
    assert max(values(result)) > 0, f"{query} never saw a queue under load"
    assert query.startswith("sum(")
    counted = observed.range("count(" + query.removeprefix("sum("))
    assert set(values(counted)) == {1.0}, "the query must count asr-demo's pod once, and not asr-demo-canary's"


def _adapter_rules(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[dict[str, Any]]:
    (tmp_path / "kubeconfig").touch()  # nothing here may reach a cluster
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    with helm_python.Chart.load(CHART_DIR) as chart:
        manifests = chart.render({"prometheusAdapter": {"enabled": True}}, name="asr", namespace="asr-system")
    for path, text in manifests.items():
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc and doc["kind"] == "ConfigMap" and "rules.yaml" in doc.get("data", {}):
                return list(yaml.safe_load(doc["data"]["rules.yaml"])["rules"])
    raise AssertionError("no prometheus-adapter rules ConfigMap rendered")


def test_prometheus_adapter_rule_finds_the_series_and_serves_per_pod_values(
    observed: Observed, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (rule,) = _adapter_rules(monkeypatch, tmp_path)
    series = observed.api.series(rule["seriesQuery"], observed.start, observed.end)
    assert series, f"no series for {rule['seriesQuery']}"
    overrides = rule["resources"]["overrides"]
    for s in series:
        assert set(overrides) <= set(s), (overrides, s)  # the labels the adapter maps to namespace and pod
        assert re.search(rule["name"]["matches"], s["__name__"])
    # what the adapter asks when the HPA reads the Pods metric of asr-demo's pod
    metrics_query = (
        rule["metricsQuery"]
        .replace("<<.Series>>", re.sub(r"\^|\$", "", rule["name"]["matches"]))
        .replace("<<.LabelMatchers>>", f'namespace="{NAMESPACE}",pod=~"{POD}"')
        .replace("<<.GroupBy>>", "pod")
    )
    result = observed.range(metrics_query)
    assert [s["metric"] for s in result] == [{"pod": POD}], metrics_query
    assert max(values(result)) > 0
    # the pod's queue, counted once although two jobs scrape it
    once = observed.range(f'max(asr_load{{namespace="{NAMESPACE}",pod="{POD}"}})')
    assert values(result) == values(once), metrics_query


def test_the_load_was_served(observed: Observed) -> None:
    assert observed.codes.get(200, 0) > 50 and set(observed.codes) == {200}, observed.codes
    completed = observed.stream_events.get("conversation.item.input_audio_transcription.completed", 0)
    assert completed > 0 and "error" not in observed.stream_events, observed.stream_events
    assert math.isfinite(observed.end - observed.start)
