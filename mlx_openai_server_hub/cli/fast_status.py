"""`status`, the command run most often, and the parse that lets it skip Typer.

Everything here and in what it imports stays off Typer, pydantic and aiohttp: `main()`
runs a plain `[--config PATH] status [NAMES...]` through this module alone.
"""

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mlx_openai_server_hub import tables
from mlx_openai_server_hub.cli.output import echo, flash
from mlx_openai_server_hub.cli.state import Cli
from mlx_openai_server_hub.client import HubClient, HubHTTPError, HubUnreachable

if TYPE_CHECKING:
    from mlx_openai_server_hub.config import HubConfig


def fetch_status(client: HubClient, unreachable: str | None) -> dict[str, Any] | None:
    """/hub/status, or None after a warning (`unreachable` None: "not running")."""
    try:
        snapshot = client.status()
    except HubUnreachable as exc:
        flash("warn", f"{unreachable}: {exc}" if unreachable else "Hub daemon is not running")
        return None
    except HubHTTPError as exc:
        flash("warn", f"Unable to fetch live status: {exc}")
        return None
    for warning in snapshot.get("warnings") or ():
        flash("warn", str(warning))
    return snapshot


def print_status(
    cfg: "HubConfig",
    snapshot: dict[str, Any] | None,
    names: Sequence[str] | None,
    *,
    with_status_page: bool = True,
) -> None:
    """`Hub log path`, `Status page enabled`, the models table (filtered by `names`) and,
    from a live hub, the memory line."""
    echo(f"Hub log path: {cfg.log_path}")
    if with_status_page:
        echo(f"Status page enabled: {'yes' if cfg.enable_status_page else 'no'}")
    rows = tables.status_rows(cfg.models, (snapshot or {}).get("models"))
    wanted = {n.strip() for n in names or () if n.strip()}
    if wanted:
        rows = [(name, row) for name, row in rows if name in wanted]
        if not rows:
            echo("No matching models in hub config")
            return
    echo("Models:")
    for line in tables.render_table(tables.STATUS_HEADERS, [row for _, row in rows]):
        echo(line)
    memory = tables.memory_summary(snapshot)
    if memory is not None:
        echo(memory)


def cmd_status(cli: Cli, model_names: Sequence[str] | None) -> None:
    """Print the status table (from the config alone when the hub is down)."""
    cfg = cli.config()
    print_status(cfg, fetch_status(cli.client(), None), model_names)


def fast_status_args(argv: Sequence[str]) -> tuple[str | None, list[str]] | None:
    """(config, names) for a plain `[--config PATH] status [NAMES...]`, else None.

    Everything else (options, help, typos) goes through Typer.
    """
    args = list(argv)
    config = None
    if args and args[0].startswith("--config="):
        config = args.pop(0).partition("=")[2]
    elif len(args) >= 2 and args[0] == "--config":
        config = args[1]
        args = args[2:]
    if not args or args[0] != "status" or config == "":
        return None
    names = args[1:]
    if any(n.startswith("-") for n in names):
        return None
    return config, names
