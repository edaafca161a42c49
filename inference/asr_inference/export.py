"""`asr-export`: build the ONNX graph `--runtime onnx` serves, ahead of time, and check it as a start would.

    asr-export --model /models/sensevoice [--quantize int8] [--onnx-cache-dir DIR] [any asr-serve flag]

Loads the model and runs the server's own warm-up (`backend.warm`: the precision gate, then the ONNX export or the
cached graph, then the gate against PyTorch fp32) with `runtime=onnx`, so the cache entry it leaves is exactly the
one a server with the same flags loads at start (an init container, an image build or CI can pay the export
once). Prints the verdict as JSON; exits 0 when the graph passes the gate, 1 when the server would refuse it
(the reason in `runtime_fallback_reason`), 2 on invalid flags. Logs go to stderr, the verdict alone to stdout.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from .cli import build_parser, parse_settings
from .logging_setup import configure_logging
from .warmup import warmup_samples


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser("asr-export", "Build and check the ONNX graph `asr-serve --runtime onnx` would serve.")
        settings = parse_settings([*args, "--runtime", "onnx"], parser)
    except ValidationError as exc:
        print(f"asr-export: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    with contextlib.redirect_stdout(sys.stderr):  # logs (and funasr's prints) to stderr: stdout is the verdict
        configure_logging(settings)
        from .backends import create_backend

        backend = create_backend(settings, None)
        backend.load()
        info = backend.warm([backend.prepare(s) for s in warmup_samples(settings)])
    verdict = {
        "model": info.name,
        "family": info.family,
        "runtime": info.runtime,
        "quantize": info.quantize,
        "runtime_fallback_reason": info.runtime_fallback_reason,
        "argmax_agreement": info.runtime_agreement,
        "cer": info.runtime_cer,
        "graph": str(getattr(getattr(backend, "_onnx", None), "path", "")) or None,
    }
    print(json.dumps(verdict, indent=1))
    return 0 if info.runtime == "onnx" else 1


if __name__ == "__main__":
    sys.exit(main())
