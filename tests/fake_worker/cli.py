"""The fake ``mlx-openai-server`` command: ``--help``, ``--version`` and ``launch``."""

from __future__ import annotations

import os
import sys
import time

from .help_text import FLAVOR_ALIASES, GROUP_HELP, HELPS, PROG, VERSIONS
from .knobs import KnobError, Knobs
from .options import UsageError, parse_launch_args
from .process import log, log_error, run


def _usage_error(message: str, command: str = "launch") -> int:
    usage = f"{PROG} {command} [OPTIONS]" if command else f"{PROG} [OPTIONS] COMMAND [ARGS]..."
    hint = f"{PROG} {command} --help" if command else f"{PROG} --help"
    sys.stderr.write(f"Usage: {usage}\nTry '{hint}' for help.\n\nError: {message}\n")
    return 2


def main(argv: list[str] | None = None) -> int:
    """Run the command (``argv`` defaults to ``sys.argv[1:]``); the process exit code."""
    args = sys.argv[1:] if argv is None else argv
    flavor = FLAVOR_ALIASES.get(os.environ.get("FAKE_WORKER_FLAVOR", "").strip().lower())
    if flavor is None:
        log_error(f"fake worker: unknown FAKE_WORKER_FLAVOR (use one of {list(FLAVOR_ALIASES)})")
        return 2
    if not args or args[0] == "--help":
        sys.stdout.write(GROUP_HELP)
        return 0
    if args[0] == "--version":
        log(f"{PROG}, version {VERSIONS[flavor]}")
        return 0
    if args[0] != "launch":
        if args[0].startswith("-"):
            return _usage_error(f"No such option: {args[0]}", command="")
        return _usage_error(f"No such command '{args[0]}'.", command="")
    if "--help" in args[1:]:
        time.sleep(float(os.environ.get("FAKE_HELP_DELAY") or 0))
        sys.stdout.write(HELPS[flavor])
        return 0
    try:
        launch = parse_launch_args(args[1:], flavor)
        knobs = Knobs.from_env(os.environ)
    except UsageError as exc:
        return _usage_error(str(exc))
    except KnobError as exc:
        log_error(f"fake worker: {exc}")
        return 2
    return run(launch, knobs, flavor)
