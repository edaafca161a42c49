"""Run FunASR's own `funasr-server` unchanged except for its CPU thread count.

funasr-server has no thread option, and `AutoModel` resets torch's thread count to `ncpu` (default 4) at load
and on every `generate()` call. On a 2-core machine 4 threads oversubscribe the cores; the benchmark gives the
peer the same thread count as our server, by changing only the default `AutoModel` falls back to:

    python -m asr_bench.peer --ncpu 2 -- --host 127.0.0.1 --port 9000 --device cpu --model-path DIR

(`asr-bench --peer-stock` runs the unmodified `funasr-server` script instead.)
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m asr_bench.peer")
    parser.add_argument("--ncpu", type=int, required=True)
    parser.add_argument("server_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    server_args = args.server_args[1:] if args.server_args[:1] == ["--"] else args.server_args

    import funasr.auto.auto_model as auto_model

    original = auto_model._resolve_ncpu

    def resolve_ncpu(config: Any, fallback: int = 4) -> int:
        return int(original(config, args.ncpu))

    auto_model._resolve_ncpu = resolve_ncpu
    from funasr.bin.server import main as server_main

    sys.argv = ["funasr-server", *server_args]
    server_main()


if __name__ == "__main__":
    main()
