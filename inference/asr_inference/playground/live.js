// The live panel: /readyz (state, model, precision) and /metrics (queue depth, in-flight requests, batch
// sizes), polled every few seconds. Both endpoints are open (no API key), as Kubernetes probes need.

const $ = (id) => document.getElementById(id);
const POLL_MS = 2000;

// The few samples the panel needs from Prometheus' text format: name{labels} value.
export function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = line.match(/^([a-zA-Z_:][\w:]*)(\{([^}]*)\})?\s+(\S+)/);
    if (!match) continue;
    const labels = {};
    for (const pair of (match[3] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1]] = pair[2];
    samples.push({ name: match[1], labels, value: Number(match[4]) });
  }
  return samples;
}

function value(samples, name) {
  const sample = samples.find((s) => s.name === name);
  return sample ? sample.value : undefined;
}

// Cumulative `le` buckets -> batches per bucket, for the little histogram.
function batchBuckets(samples) {
  const cumulative = samples
    .filter((s) => s.name === "asr_batch_size_bucket" && s.labels.le !== "+Inf")
    .map((s) => ({ le: Number(s.labels.le), count: s.value }))
    .sort((a, b) => a.le - b.le);
  return cumulative.map((b, i) => ({ le: b.le, count: b.count - (i ? cumulative[i - 1].count : 0) }));
}

function renderHistogram(buckets, maxBatchSize) {
  const shown = buckets.filter((b) => b.le <= Math.max(maxBatchSize || 0, 1));
  const top = Math.max(1, ...shown.map((b) => b.count));
  const bars = shown.map((b) => {
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.height = `${(100 * b.count) / top}%`;
    bar.title = `≤ ${b.le}: ${b.count} batches`;
    const label = document.createElement("span");
    label.textContent = b.le;
    bar.append(label);
    return bar;
  });
  $("live-batch-histogram").replaceChildren(...bars);
}

async function pollOnce() {
  const ready = await fetch("/readyz", { cache: "no-store" }).then(
    async (r) => ({ code: r.status, body: await r.json().catch(() => ({})) }),
    () => ({ code: 0, body: {} }),
  );
  const status = ready.code === 0 ? "down" : ready.body.status || (ready.code === 200 ? "ready" : "loading");
  $("live-status").textContent = status;
  $("live-status").dataset.state = status;
  $("live-status").title = ready.body.error || ready.body.precision_fallback_reason || "";
  $("live-model").textContent = ready.body.model || "–";
  $("live-device").textContent = ready.body.device || "–";
  const fellBack = ready.body.requested_precision && ready.body.requested_precision !== ready.body.precision;
  $("live-precision").textContent = ready.body.precision
    ? ready.body.precision + (fellBack ? ` (asked ${ready.body.requested_precision})` : "") : "–";

  const text = await fetch("/metrics", { cache: "no-store" }).then((r) => (r.ok ? r.text() : ""), () => "");
  const samples = parseMetrics(text);
  const fmt = (v) => (v === undefined ? "–" : String(v));
  $("live-queue").textContent = fmt(value(samples, "asr_queue_depth"));
  $("live-inflight").textContent = fmt(value(samples, "asr_inflight_requests"));
  const count = value(samples, "asr_batch_size_count");
  const sum = value(samples, "asr_batch_size_sum");
  $("live-batch").textContent = count
    ? `mean ${(sum / count).toFixed(2)} over ${count} batches (max ${ready.body.max_batch_size ?? "?"})` : "–";
  renderHistogram(batchBuckets(samples), ready.body.max_batch_size);
  return status;
}

export function startLivePanel(onStatus) {
  const tick = async () => {
    try {
      onStatus(await pollOnce());
    } finally {
      setTimeout(tick, POLL_MS);
    }
  };
  tick();
}
