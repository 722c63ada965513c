"""`pull NAME|REPO...`: download models without loading them, with progress.

Configured models go through a running hub (so its status page shows the
download and every other caller joins it); bare repo ids, and everything
when no hub runs, are downloaded by this process into the same Hugging
Face cache. The work itself, the lines and the exit codes are in `pull.py`.
"""

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from mlx_openai_server_hub.cli.output import LiveBlock, echo, fail, interactive
from mlx_openai_server_hub.cli.state import Cli

if TYPE_CHECKING:
    from mlx_openai_server_hub.client import HubClient
    from mlx_openai_server_hub.config import HubConfig
    from mlx_openai_server_hub.pull import ProgressView


def _config_if_any(cli: Cli) -> "HubConfig | None":
    """hub.yaml when there is one: a bare repo id can be pulled without any."""
    return cli.config() if cli.config_path.exists() else None


def _running_hub(cli: Cli, cfg: "HubConfig | None") -> "HubClient | None":
    if cfg is None:
        return None
    client = cli.client()
    return client if client.is_up() else None


def _view(block: LiveBlock) -> "ProgressView":
    """Bars redrawn in place on a terminal; periodic plain lines otherwise."""
    from mlx_openai_server_hub.pull import ProgressView

    if not interactive():
        return ProgressView(echo)
    utf8 = "utf" in (getattr(sys.stdout, "encoding", None) or "").lower()
    return ProgressView(echo, draw=block.draw, utf8=utf8)


def cmd_pull(cli: Cli, args: Sequence[str]) -> None:
    """Download each `NAME|REPO`; exit with the worst outcome's code (see `pull.py`)."""
    from mlx_openai_server_hub.pull import (
        EXIT_INTERRUPTED,
        EXIT_USAGE,
        PullUsageError,
        pull_locally,
        pull_via_hub,
        resolve_targets,
        worst_exit,
    )

    if not args:
        fail("Nothing to pull: give model names or repo ids", EXIT_USAGE)
    cfg = _config_if_any(cli)
    try:
        targets = resolve_targets(cfg, args)
    except PullUsageError as exc:
        fail(str(exc), EXIT_USAGE)
    client = _running_hub(cli, cfg)
    via_hub = [t for t in targets if client is not None and t.name is not None]
    here = [t for t in targets if t not in via_hub]
    codes = []
    if via_hub:
        assert client is not None
        codes.append(pull_via_hub(client, via_hub, _view(LiveBlock())))
    if here and EXIT_INTERRUPTED not in codes:
        codes.append(pull_locally(here, _view(LiveBlock())))
    raise SystemExit(worst_exit(codes))
