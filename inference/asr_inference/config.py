"""Server settings: one pydantic-settings class, read from flags, `ASR_<NAME>` env vars and defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Device = str  # "auto" | "cpu" | "cuda" | "cuda:N" (validated below)
Precision = Literal["fp32", "fp16", "bf16"]
Family = Literal["auto", "sensevoice", "paraformer", "fun-asr-nano", "whisper", "glm-asr"]
Hub = Literal["local", "modelscope", "huggingface"]

DEMO_MODEL_DIR = Path(__file__).parent / "models" / "demo"


class Settings(BaseSettings):
    """Every setting of the inference server. Each is also the env var `ASR_<NAME>` and the flag `--<name>`."""

    model_config = SettingsConfigDict(
        env_prefix="ASR_",
        extra="ignore",
        validate_default=True,
        protected_namespaces=(),
        use_attribute_docstrings=True,
    )

    model: str | None = None
    """Model to serve: an existing local directory (config.yaml + model.pt + tokenizer) or a hub id.
    Empty: the embedded demo model. A path that looks local but does not exist fails at start, with no hub call."""

    hub: Hub = "modelscope"
    """Where a `model` that is not an existing directory is fetched from. `local`: never fetch (a missing directory
    fails at start). Path-like values (/abs, ./rel, ~) never go to a hub either."""

    model_revision: str | None = None
    """Hub revision (tag, branch or commit) of `model`; ignored for local directories."""

    family: Family = "auto"
    """Model family; `auto` reads it from the directory (funasr's config.yaml, or transformers' config.json for
    Whisper and GLM-ASR). whisper, glm-asr: served through transformers (a hub id needs `--hub huggingface`)."""

    device: Device = "auto"
    """auto (cuda when available, else cpu) | cpu | cuda | cuda:N."""

    inference_workers: int = Field(0, ge=0, le=16)
    """Inference workers, each with its own copy of the model and its own thread; a batch goes to the idle one that
    has been busy least. 0 = one per GPU this process sees when `device` is auto or cuda on a CUDA machine (every
    GPU of the pod), else one. On CPU more than one only splits the cores (and holds a model copy each)."""

    precision: Precision = "fp32"
    """Requested compute precision. fp16/bf16 run under autocast and are checked against fp32 at warm-up: NaN/inf,
    per-frame best tokens agreeing on fewer than `precision_min_agreement` of the frames, or transcripts further than
    `precision_max_cer` from fp32's fall back to fp32. On CPU only bf16 is reduced (fp16 falls back to fp32)."""

    precision_min_agreement: float = Field(0.995, ge=0, le=1)
    """Warm-up check of fp16/bf16: the least share of output frames whose best token must equal fp32's."""

    precision_max_cer: float = Field(0.01, ge=0, le=1)
    """Warm-up check of fp16/bf16: the largest character error rate of its transcripts against fp32's."""

    force_precision: bool = False
    """Serve the requested fp16/bf16 (or `runtime=onnx` graph) even when it fails the warm-up check (the check still
    runs and /readyz reports it): for benchmarks that measure a precision's or a runtime's ceiling, e.g. INT8 on a
    random-weight model. Not for production."""

    tf32: bool = True
    """On CUDA: fp32 matrix products and convolutions on TF32 tensor cores (torch's "high" float32 matmul precision,
    10-bit mantissa inputs, fp32 accumulation; several times full fp32's throughput); off: full fp32. Also the fp32
    reference of the fp16/bf16 warm-up check. No effect on CPU."""

    graph_mode: Literal["trace", "eager"] = "trace"
    """How the batched forward runs. trace: SenseVoice runs as a TorchScript graph traced at warm-up (at the precision
    the warm-up gate chose; fp16/bf16 graphs carry autocast's casts), which holds no GIL while it computes, so request
    handling and decoding do not stall it; the graph is kept only if it reproduces the eager outputs on warm-up
    batches of other shapes (else eager, reason in /readyz). Paraformer and Fun-ASR-Nano run eagerly. eager: plain
    PyTorch modules."""

    runtime: Literal["pytorch", "onnx"] = "pytorch"
    """What runs the batched forward. onnx (SenseVoice): the forward exported to ONNX (once, cached in
    `onnx_cache_dir`) and run by ONNX Runtime, the faster runtime for CPU pods; served only if it passes the warm-up
    gate against the PyTorch fp32 forward (finite, `precision_min_agreement`, `precision_max_cer`), else PyTorch
    serves and /readyz says why. Runs in fp32 (or INT8 with `quantize`): a reduced `precision` does not apply."""

    quantize: Literal["none", "int8"] = "none"
    """With `runtime=onnx`: int8 quantizes the exported graph (dynamic INT8: int8 weights per channel, activations
    quantized on the fly; ~3x smaller, faster matrix products on CPU). It passes the same warm-up gate."""

    onnx_cache_dir: Path | None = None
    """Where exported ONNX graphs are kept, keyed by the weights' hash, opset, exporter and quantization (default
    ~/.cache/asr-platform/onnx; in a pod a writable volume, so a restart does not export again)."""

    max_batch_size: int = Field(16, ge=1, le=1024)
    """Most items (audio segments) in one forward pass."""

    max_wait_ms: float = Field(10.0, ge=0, le=10_000)
    """How long the first item of a batch waits for batch-mates before the batch runs anyway."""

    max_batch_audio_s: float = Field(480.0, gt=0)
    """Most padded audio seconds in one batch (items x longest item): bounds accelerator memory per batch."""

    max_length_ratio: float = Field(4.0, ge=0)
    """Longest item over shortest in one batch (items under 2 s count as 2 s); an item further off leads the next
    batch instead, so a long file's 30-s windows do not pad short clips to 30 s. 0: no limit."""

    max_queue_size: int = Field(256, ge=1)
    """Items waiting for a batch above which new requests are refused with 429 + Retry-After."""

    max_queue_wait_s: float = Field(0.0, ge=0)
    """Refuse a new request (429 + Retry-After) when the batches already queued or admitted ahead of it would keep
    it waiting longer than this, each batch costed from its padded audio by a fit of the batches run (batch_cost.py);
    0: refuse by count only (max_queue_size).
    Past capacity, the excess is refused at once instead of waiting out a full queue: answered requests keep a
    bounded latency."""

    request_timeout_s: float = Field(120.0, gt=0)
    """A request still unanswered after this long gets 504 and its queued items are dropped."""

    max_header_kb: int = Field(64, ge=8)
    """Largest request head (request line + headers) in KiB; past it the connection gets 431 and is closed."""

    upload_timeout_s: float = Field(30.0, gt=0)
    """A transcription upload that sends no data for this long is cut off (408 upload_timeout): a stalled client
    cannot hold a connection and its spooled body."""

    max_upload_mb: float = Field(200.0, gt=0)
    """Largest accepted upload in MiB (413 above); spooled to disk, never held in memory whole."""

    max_audio_s: float = Field(3600.0, gt=0)
    """Longest accepted audio after decoding (413 above)."""

    scratch_mb: float = Field(0.0, ge=0)
    """Disk in MiB under the temp dir for uploads in progress (spooled body, ffmpeg's copy, decoded samples). An
    upload reserves its worst case before its body is read; one that does not fit gets 429 with Retry-After
    instead of filling the disk (on Kubernetes, a full /tmp volume evicts the pod). 0: no limit. /readyz reports
    the need per request."""

    segment_s: float = Field(30.0, ge=1, le=600)
    """Audio longer than this is cut into segments of at most this length (see `segmenter`) and stitched."""

    segment_overlap_s: float = Field(2.0, ge=0, le=30)
    """Overlap between neighbouring windows of long audio; tokens are kept from the window whose centre is nearer."""

    segmenter: Literal["auto", "vad", "windows"] = "auto"
    """How audio longer than `segment_s` is cut. vad: at pauses found by silero-vad (segments hold speech only, each
    at most `segment_s`, tiny ones merged into a neighbour, times in the original timeline); windows: fixed
    overlapping windows stitched by token time. auto: vad when silero-vad is installed, else windows. A request's
    `chunking_strategy` (`auto` or a `server_vad` object) overrides it."""

    vad_threshold: float = Field(0.5, gt=0, lt=1)
    """Speech probability above which a 32 ms frame is speech (VAD segmenter and realtime turn detection)."""

    vad_prefix_padding_ms: int = Field(300, ge=0, le=5000)
    """Audio kept before detected speech (and after it, for uploads)."""

    vad_silence_duration_ms: int = Field(500, ge=32, le=10_000)
    """Silence that ends a stretch of speech (a cut for uploads, the end of a turn for realtime sessions)."""

    cache_entries: int = Field(256, ge=0)
    """Result cache size (LRU, keyed by sha256 of the audio bytes + decoding options); 0 turns it off."""

    ncpu: int = Field(0, ge=0)
    """Torch intra-op threads for inference; 0 = automatic: on CPU one less than the CPUs this process may use
    (decoding, features and the event loop need a core), on CUDA one (the CPUs go to the decode workers)."""

    decode_workers: int = Field(0, ge=0)
    """Threads for audio decoding and feature extraction (off the event loop); 0 = the CPUs this process may use."""

    drain_timeout_s: float = Field(30.0, ge=0)
    """On SIGTERM: how long queued and in-flight requests may take to finish before the process exits."""

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Log level."""

    log_format: Literal["json", "text"] = "json"
    """json: one JSON object per line; text: human-readable lines."""

    log_file: Path | None = None
    """Also write logs to this file, rotated by size."""

    log_max_bytes: int = Field(50 * 1024 * 1024, ge=1024)
    """Rotate `log_file` when it reaches this size."""

    log_backup_count: int = Field(5, ge=0)
    """Rotated log files kept besides the current one."""

    host: str = "0.0.0.0"
    """Address to listen on. `::`: every IPv6 and IPv4 address (dual stack; 0.0.0.0 where the kernel has no
    IPv6) — what the operator sets, so one pod spec serves IPv4, IPv6 and dual-stack clusters."""

    port: int = Field(8000, ge=1, le=65535)
    """Port to listen on (HTTP API, health and /metrics)."""

    api_key: str | None = None
    """When set, every /v1 request needs `Authorization: Bearer <api_key>`. Health and metrics stay open."""

    public_docs: bool = False
    """Serve /docs and /openapi.json without the API key. Off, they need `api_key` like /v1 (when one is set)."""

    playground: bool = True
    """Serve the built-in web playground at / and /playground (static page; its API calls still need `api_key`).
    `--no-playground` (or ASR_PLAYGROUND=false) turns it off: both paths answer 404."""

    served_model_name: str | None = None
    """Names this server answers to, comma-separated (e.g. `sensevoice,whisper-1`): the first is its id in responses,
    all are listed by /v1/models. Default: the model directory's name."""

    strict_model_name: bool = False
    """Refuse (404 model_not_found) a request whose `model` is none of the served names. Off (the default), a server
    with one model answers any `model`: OpenAI's SDK examples, Open WebUI and LiteLLM send `whisper-1`."""

    stream_max_sessions: int = Field(100, ge=0)
    """Most concurrent realtime WebSocket sessions; one more is closed at once with a `server_busy` error."""

    stream_idle_timeout_s: float = Field(60.0, gt=0)
    """A realtime session that sends nothing for this long is closed (its open utterance is transcribed first)."""

    stream_max_message_kb: int = Field(1024, ge=1)
    """Largest WebSocket message a realtime client may send; a larger one closes that session with an error."""

    stream_max_pending: int = Field(4, ge=1)
    """Finished utterances of one realtime session waiting for text; past this its socket is not read (backpressure)."""

    stream_partial_interval_ms: int = Field(500, ge=0)
    """Realtime sessions with server VAD: a partial transcript of the open utterance every this many ms of its
    audio (its newly settled text sent as `...delta`), decoded as background work that other work always goes
    ahead of and that is skipped under load. 0: no partials, one delta with the final text."""

    @property
    def served_names(self) -> list[str]:
        """`served_model_name` split on commas (empty when unset)."""
        names = [n.strip() for n in (self.served_model_name or "").split(",")]
        return list(dict.fromkeys(n for n in names if n))

    @field_validator("device")
    @classmethod
    def _check_device(cls, v: str) -> str:
        v = v.strip().lower()
        if v in ("auto", "cpu", "cuda"):
            return v
        if v.startswith("cuda:") and v[5:].isdigit():
            return v
        raise ValueError("device must be auto, cpu, cuda or cuda:N")

    @field_validator("model", "api_key", "served_model_name", "model_revision", mode="before")
    @classmethod
    def _empty_is_none(cls, v: object) -> object:
        return None if v == "" else v

    @field_validator("max_length_ratio")
    @classmethod
    def _check_length_ratio(cls, v: float) -> float:
        if 0 < v < 1:
            raise ValueError("max_length_ratio must be 0 (no limit) or at least 1")
        return v
