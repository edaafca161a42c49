"""Prometheus metrics of the inference server: prefixed `asr_`, unit-suffixed, low-cardinality labels.

Every metric lives on a registry owned by one `Metrics` object (one per app), so tests and several apps in one
process never collide. `metric_names()` is the list other components (the Helm dashboard, alerts) check against.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .thread_cpu import ThreadCpuCollector

STAGES = ("decode", "vad", "prepare", "features", "inference", "postprocess")
CPU_STAGES = ("features", "inference")  # the inference thread's CPU time (asr_stage_cpu_seconds_total)
_BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256)
_AUDIO_S_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 240, 480, 960, 1920)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    """All server metrics on one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.queue_depth = Gauge(
            "asr_queue_depth",
            "Items (audio segments) waiting for a batch.",
            registry=r,
        )
        self.load = Gauge(
            "asr_load",
            "The autoscaling signal: asr_queue_depth plus the open realtime streams, each weighted by the audio it "
            "sent over the last 10 s per second (one sending in real time counts as one queued item).",
            registry=r,
        )
        self.inflight_requests = Gauge("asr_inflight_requests", "Transcription requests being handled.", registry=r)
        self.batch_size = Histogram(
            "asr_batch_size", "Items per forward pass.", buckets=_BATCH_SIZE_BUCKETS, registry=r
        )
        self.batch_audio_seconds = Histogram(
            "asr_batch_audio_seconds",
            "Audio seconds per forward pass (sum of items).",
            buckets=_AUDIO_S_BUCKETS,
            registry=r,
        )
        self.request_duration_seconds = Histogram(
            "asr_request_duration_seconds",
            "Transcription request latency, receipt to response.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.stage_duration_seconds = Histogram(
            "asr_stage_duration_seconds",
            "Time per pipeline stage: decode and prepare (samples to model input) per item; features (FunASR "
            "families: fbank + LFR + CMVN of the whole batch on the model's device), inference (the whole batch "
            "forward, features included) and postprocess per batch.",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.device_batches_total = Counter(
            "asr_device_batches",
            "Batches run per inference worker (one per GPU of the pod; its device as label).",
            ["device"],
            registry=r,
        )
        self.device_busy_seconds_total = Counter(
            "asr_device_busy_seconds",
            "Seconds each inference worker spent running batches (features + forward): its rate is the worker's "
            "utilisation.",
            ["device"],
            registry=r,
        )
        self.stage_cpu_seconds_total = Counter(
            "asr_stage_cpu_seconds",
            "CPU seconds of the inference thread per stage: inference (whole batches, features included) and "
            "features. The CPU the server spends outside the forward is process CPU - (inference - features) CPU "
            "(intra-op worker threads of a CPU forward are not in these).",
            ["stage"],
            registry=r,
        )
        self.audio_seconds_total = Counter(
            "asr_audio_seconds", "Audio seconds transcribed (successful requests).", registry=r
        )
        self.requests_total = Counter(
            "asr_requests", "Transcription requests by HTTP status code.", ["code"], registry=r
        )
        self.model_ready = Gauge("asr_model_ready", "1 once the model is loaded and warmed, else 0.", registry=r)
        self.precision_fallback_total = Counter(
            "asr_precision_fallback",
            "Times the requested reduced precision failed the warm-up check and fp32 was served instead.",
            registry=r,
        )
        self.fp32_reruns_total = Counter(
            "asr_fp32_reruns",
            "Batches whose reduced-precision (fp16/bf16) outputs held NaN/inf while serving and were rerun in fp32.",
            registry=r,
        )
        self.cache_hits_total = Counter("asr_cache_hits", "Result-cache hits.", registry=r)
        self.cache_misses_total = Counter("asr_cache_misses", "Result-cache misses.", registry=r)
        self.batch_retries_total = Counter(
            "asr_batch_retries",
            "Batches whose forward raised and were retried item by item to isolate the failing item.",
            registry=r,
        )
        self.device_errors_total = Counter(
            "asr_device_errors",
            "Forward passes that failed on the device: out_of_memory (the batch is split in halves) or sticky "
            "(the device is unusable: the server stops taking work and fails /healthz).",
            ["kind"],
            registry=r,
        )
        for kind in ("out_of_memory", "sticky"):  # exported as 0 from the start: alerts see a series to rate
            self.device_errors_total.labels(kind=kind)
        self.gpu_memory_allocated_bytes = Gauge(
            "asr_gpu_memory_allocated_bytes",
            "CUDA memory held by tensors (torch allocator), at the scrape.",
            registry=r,
        )
        self.gpu_memory_peak_bytes = Gauge(
            "asr_gpu_memory_peak_bytes",
            "Most CUDA memory held by tensors since the previous scrape (what the batches in between needed).",
            registry=r,
        )
        self.gpu_memory_reserved_bytes = Gauge(
            "asr_gpu_memory_reserved_bytes",
            "CUDA memory reserved by the torch caching allocator, at the scrape.",
            registry=r,
        )
        self.gpu_memory_total_bytes = Gauge(
            "asr_gpu_memory_total_bytes", "Total memory of the CUDA device in use.", registry=r
        )
        self.active_streams = Gauge(
            "asr_active_streams",
            "Open streams: realtime WebSocket sessions and stream=true uploads being sent.",
            ["kind"],
            registry=r,
        )
        self.stream_audio_seconds_total = Counter(
            "asr_stream_audio_seconds", "Audio seconds received on realtime sessions.", registry=r
        )
        self.stream_final_latency_seconds = Histogram(
            "asr_stream_final_latency_seconds",
            "Realtime: from the end of an utterance (speech stopped or commit) to its completed text being sent.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.stream_partials_total = Counter(
            "asr_stream_partials",
            "Realtime partial decodes of open utterances, by outcome: sent (new settled text), unchanged (none), "
            "shed (skipped: a batch of other work was waiting); revised counts utterances whose final text "
            "changed what their partials had sent (the completed event carries the final text).",
            ["outcome"],
            registry=r,
        )
        self.streams_rejected_total = Counter(
            "asr_streams_rejected",
            "Realtime sessions refused: stream_max_sessions were open, or the queue refuses new work (as a 429).",
            registry=r,
        )
        for kind in ("realtime", "sse"):
            self.active_streams.labels(kind=kind)
        for outcome in ("sent", "unchanged", "shed", "revised"):
            self.stream_partials_total.labels(outcome=outcome)
        r.register(ThreadCpuCollector())
        for stage in STAGES:  # pre-create the label sets so every series exists from the first scrape
            self.stage_duration_seconds.labels(stage=stage)
        for stage in CPU_STAGES:
            self.stage_cpu_seconds_total.labels(stage=stage)


def metric_names() -> set[str]:
    """Names of every sample series the server can export (histogram `_bucket/_sum/_count`, counter `_total`)."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + s for s in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names
