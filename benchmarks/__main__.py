"""`python -m benchmarks` (or `benchmarks/bench.py`): the command line of the benchmark."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path

import benchmarks

from .report import DEFAULT_BASELINE, summarize
from .runner import run


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run the benchmark, print and store its figures; the exit code."""
    assert benchmarks.__doc__ is not None
    summary = benchmarks.__doc__.split("\n\n")[0]
    parser = argparse.ArgumentParser(prog="benchmarks/bench.py", description=summary)
    parser.add_argument("--quick", action="store_true", help="CI-sized run (seconds)")
    parser.add_argument("--real-worker", metavar="PATH", help="mlx-openai-server executable")
    parser.add_argument(
        "--real-jit",
        type=int,
        metavar="N",
        help="real-worker JIT: first load plus N reloads (default: 3; --quick: none)",
    )
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON")
    parser.add_argument("--baseline", metavar="FILE", default=str(DEFAULT_BASELINE))
    parser.add_argument("--no-baseline", action="store_true", help="compare with no baseline")
    parser.add_argument("--strict", action="store_true", help="exit 1 on a miss or regression")
    parser.add_argument(
        "--save-baseline",
        action="store_true",
        help="store this run as the baseline of its mode (full or quick) in --baseline",
    )
    parser.add_argument("--keep", action="store_true", help="keep the hub's temporary folder")
    args = parser.parse_args(argv)
    if args.real_worker:
        args.real_worker = str(Path(args.real_worker).expanduser().resolve())
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return summarize(asyncio.run(run(args)), args)


if __name__ == "__main__":
    sys.exit(main())
