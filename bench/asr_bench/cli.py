"""`asr-bench`: the command line. The comparison (batched vs per-request, ours vs FunASR's own server, the raw
model ceiling) is `comparison.py`; `--overload` is `overload.py`."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import clips as clips_mod
from . import comparison
from .comparison import DEFAULT_CONFIGS
from .model_dirs import resolve_model
from .servers import standard_configs


def _csv(kind: type) -> Any:
    def parse(v: str) -> list[Any]:
        return [kind(x) for x in v.split(",") if x.strip()]

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="asr-bench",
        description="Batched vs per-request serving, ours vs FunASR's own server, and the raw model ceiling, on one "
        "machine in one run; or (--overload) one server past its capacity.",
    )
    p.add_argument(
        "--model",
        default=None,
        help="model directory; or 'sensevoice-small-random' / 'paraformer-large-random' / 'whisper-base-random' / "
        "'whisper-small-random' / 'glm-asr-nano-random' (random weights, "
        "real dimensions, built under --models-dir on first use) [default: the embedded demo model]",
    )
    p.add_argument(
        "--models-dir",
        type=Path,
        default=Path("bench-results/models"),
        help="where the random real-dimension models are built [default: bench-results/models]",
    )
    p.add_argument(
        "--url",
        default=None,
        help="benchmark an already running server at this URL (127.0.0.1 only) instead of starting the configs",
    )
    p.add_argument(
        "--configs",
        type=_csv(str),
        default=None,
        help=f"comma list of {', '.join(standard_configs(16, 10, []))} [default: {','.join(DEFAULT_CONFIGS)}]",
    )
    p.add_argument("--concurrency", type=_csv(int), default=None, help="closed-loop levels [default: 1,4,16]")
    p.add_argument(
        "--rate",
        type=_csv(float),
        default=None,
        help="open-loop Poisson rates in requests/s [default: 0.5x and 1.5x funasr-server's (else the slowest "
        "config's) best closed-loop throughput, measured in this run]; 0 disables",
    )
    p.add_argument("--requests", type=int, default=None, help="most requests per cell [default: 240]")
    p.add_argument("--cell-seconds", type=float, default=None, help="most seconds per cell [default: 20]")
    p.add_argument("--repeats", type=int, default=None, help="repetitions of the interleaved cells [default: 2]")
    p.add_argument(
        "--clips",
        default=None,
        help="demo-heldout | speech | espeak (generated 5-15 s clips) | espeak-10s (12 clips of 8-12 s) | a "
        "directory [default: demo-heldout, else speech]",
    )
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N [default: cpu]")
    p.add_argument(
        "--ncpu",
        type=int,
        default=0,
        help="torch threads (and our decode workers) for every server "
        "and the raw measurement; 0 = the CPUs available [default: 0]",
    )
    p.add_argument("--max-batch-size", type=int, default=16, help="batched configs' --max-batch-size [default: 16]")
    p.add_argument("--max-wait-ms", type=float, default=10.0, help="our --max-wait-ms [default: 10]")
    p.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="extra asr-serve flag (repeatable), e.g. --server-arg=--segment-s=20",
    )
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=BASE,ARG,...",
        help="an extra config: standard config BASE plus asr-serve flags (and env:KEY=VALUE items), run interleaved "
        "with the others and compared with its base, e.g. ours-ncpu1=ours-batched-fp32,--ncpu=1 (repeatable)",
    )
    p.add_argument(
        "--peer-stock",
        action="store_true",
        help="run funasr-server unmodified (its AutoModel then uses 4 torch threads whatever --ncpu says)",
    )
    p.add_argument(
        "--warmup-requests",
        type=int,
        default=None,
        help="unmeasured requests per config before the cells [default: 2 x --max-batch-size; quick: 8]",
    )
    p.add_argument("--no-raw", action="store_true", help="skip the raw model ceiling")
    p.add_argument("--raw-only", action="store_true", help="only the raw model ceiling (fp32 and bf16), no servers")
    p.add_argument(
        "--profile",
        default=None,
        metavar="CONFIG@CONCURRENCY",
        help="py-spy record this config during this closed-loop cell (first repetition), e.g. ours-batched-fp32@16",
    )
    p.add_argument(
        "--profile-gil",
        action="store_true",
        help="with --profile: sample only the thread holding the GIL (py-spy --gil): who serialises whom",
    )
    p.add_argument("--start-timeout", type=float, default=900.0, help="seconds a server may take to be ready")
    p.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run in seconds: two configs, concurrency 1,4, "
        "a few requests, no open loop, raw at two batch sizes",
    )
    p.add_argument("--out", type=Path, default=Path("bench-results"), help="output directory [default: bench-results]")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--overload",
        action="store_true",
        help="instead of the comparison: one server past its capacity (offered-load sweep to 5x, a long file beside "
        "short clips, stalled uploads); writes overload.json (asr_bench/overload.py)",
    )
    p.add_argument(
        "--long-file-minutes",
        type=float,
        default=None,
        help="--overload: the long file's length [default: 30; --quick: 0.5]",
    )
    p.add_argument(
        "--overload-phases",
        type=_csv(str),
        default=None,
        metavar="PHASE,...",
        help="--overload: run only these of capacity,sweep,slowloris,mixed (sweep brings capacity) [default: all]",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    if args.quick and args.repeats is None:
        args.repeats = 1
    t0 = time.monotonic()
    if args.overload:
        return _overload(args)
    try:
        result = comparison.run(args)
    except RuntimeError as exc:
        print(f"asr-bench: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result["headline"], indent=1))
    print(
        f"asr-bench: wrote {result['files']['json']} and {result['files']['png']} in {time.monotonic() - t0:.0f} s",
        file=sys.stderr,
    )
    return 0


def _overload(args: argparse.Namespace) -> int:
    from . import overload

    args.out.mkdir(parents=True, exist_ok=True)
    model = resolve_model(args.model, args.models_dir)
    default_clips = "demo-heldout" if clips_mod.CLIP_SETS["demo-heldout"].is_dir() else "speech"
    _, clip_list = clips_mod.load(args.clips or default_clips, args.out)
    try:
        result = overload.run(args, model, clip_list)
    except (RuntimeError, ValueError) as exc:
        print(f"asr-bench: {exc}", file=sys.stderr)
        return 1
    result["command"] = "asr-bench " + shlex.join(args.argv)
    (args.out / "overload.json").write_text(json.dumps(result, indent=1))
    print("\n".join(result["headline"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
