#!/usr/bin/env python3
"""`benchmarks/bench.py [options]`: the documented command line of the `benchmarks` package."""

import runpy
import sys
from pathlib import Path

# Run as a script, this folder is sys.path[0]: the repository must be there instead, so
# that `benchmarks` and `tests.support` import as packages.
sys.path[0] = str(Path(__file__).resolve().parent.parent)
runpy.run_module("benchmarks", run_name="__main__", alter_sys=True)
