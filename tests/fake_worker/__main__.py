"""Run the fake worker: ``python tests/fake_worker ...`` or ``python -m tests.fake_worker ...``."""

import sys
from pathlib import Path

if not __package__:
    # Run as a folder, sys.path[0] is this folder: `tests.fake_worker` is not found from
    # there (and its module names could shadow others), so look from the repository root.
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from tests.fake_worker.cli import main

sys.exit(main())
