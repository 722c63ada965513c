"""The `mlx-openai-server-hub` command.

Mirrors the reference's `mlx-openai-server hub <command>` (same lines, tables and exit
codes) and fixes its gaps: no client timeouts that give up while the hub keeps working,
per-model failures exit 1, `stop` waits for the hub and its workers to be gone, `watch`
shows real rows.

Start-up must stay fast (`status` well under 300 ms), so the package is in two layers:

- the commands themselves (`cmd_*`), written against the standard library, the HTTP
  client and the config loader only; they print with `echo`/`flash` and end with
  `SystemExit`. One module per concern:
  `output` (terminal lines, live blocks, spinners), `state` (the per-invocation `Cli`),
  `progress` (model actions with a live line per model), `fast_status` (`status`),
  `daemon` (`start`, `stop`, `serve`), `hub_cmds` (`reload`, per-model commands,
  `watch`), `logs`, `init` (starter config, demo model) and `service_cmds`;
- the Typer surface (`typer_app.build_app`), which imports Typer (and, through it, pydantic)
  only when it is needed. `main()` runs the common `status` invocation without it.

The server (`app`, aiohttp), the service helpers and the starter-config writer are
imported inside the commands that use them.
"""

import os
import sys
from collections.abc import Sequence
from typing import Any

from mlx_openai_server_hub.cli.fast_status import cmd_status, fast_status_args
from mlx_openai_server_hub.cli.init import worker_python
from mlx_openai_server_hub.cli.output import fail
from mlx_openai_server_hub.cli.state import PROG_NAME, make_cli
from mlx_openai_server_hub.contract import TokenError

__all__ = ["main", "worker_python"]


def __getattr__(name: str) -> Any:
    """`cli.app`: the Typer application, built on first use (for typer.testing)."""
    if name == "app":
        from mlx_openai_server_hub.cli.typer_app import build_app

        return build_app()
    raise AttributeError(name)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        fast = fast_status_args(args)
        if fast is not None:
            cmd_status(make_cli(fast[0]), fast[1])
            return
        from mlx_openai_server_hub.cli.typer_app import build_app

        build_app()(args=args, prog_name=PROG_NAME)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except TokenError as exc:  # a short MLX_HUB_TOKEN, found where a command reads it
        fail(str(exc))
    except BrokenPipeError:
        # `... | head`: the reader left; say nothing more and do not trace back.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise SystemExit(1) from None
