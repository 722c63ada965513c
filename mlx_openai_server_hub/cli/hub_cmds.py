"""Requests to a running hub: `reload`, the per-model commands and `watch`."""

import time
from collections.abc import Sequence
from typing import Any

from mlx_openai_server_hub import tables
from mlx_openai_server_hub.cli.output import LiveBlock, echo, fail, flash, interactive, spinner
from mlx_openai_server_hub.cli.progress import Outcome, clean_names, run_model_actions
from mlx_openai_server_hub.cli.state import PROG_NAME, Cli
from mlx_openai_server_hub.client import HubClient, HubClientError, HubHTTPError, HubUnreachable


def _names(values: Any) -> str:
    items = [str(v) for v in values or ()]
    return ", ".join(items) if items else "none"


def cmd_reload(cli: Cli) -> None:
    """POST /hub/reload and print what changes (the hub carries it out in the background)."""
    client = cli.client()
    try:
        with spinner("Reloading hub.yaml"):
            result = client.reload() or {}
    except HubClientError as exc:
        fail(f"Hub reload failed: {exc}")
    changed = any(result.get(k) for k in ("started", "stopped", "restarted"))
    message = (
        f"Hub reload complete: started={_names(result.get('started'))} | "
        f"stopped={_names(result.get('stopped'))} | "
        f"unchanged={_names(result.get('unchanged'))}"
    )
    if "restarted" in result:
        message += f" | restarted={_names(result.get('restarted'))}"
    flash("ok" if changed else "info", message)


def cmd_process_action(cli: Cli, names: Sequence[str], action: str) -> None:
    """start-model / stop-model: each name in turn; exit 1 if any failed."""

    def report(outcome: Outcome) -> None:
        if outcome.ok:
            flash("ok", f"{outcome.name}: {action} requested")
        else:
            flash("err", f"{outcome.name}: {action} failed ({outcome.error})")

    outcomes = run_model_actions(cli.client(), names, action, report)
    if not all(o.ok for o in outcomes):
        fail(f"One or more models failed to {action}")


def cmd_memory_action(cli: Cli, model_names: Sequence[str], action: str) -> None:
    """load-model / unload-model: each name in turn; a blank or failed one exits 1."""
    names = clean_names(model_names)
    failed = len(names) < len(model_names)

    def report(outcome: Outcome) -> None:
        if outcome.ok:
            result = outcome.result if isinstance(outcome.result, dict) else {}
            message = result.get("message") or f"Memory {action} requested"
            flash("ok", f"{outcome.name}: memory {action} requested ({message})")
        else:
            flash("err", f"{outcome.name}: {outcome.error}")

    if names:
        outcomes = run_model_actions(cli.client(), names, action, report)
        failed = failed or not all(o.ok for o in outcomes)
    if failed:
        fail("One or more memory actions failed")


def _watch_lines(client: HubClient, live: bool) -> list[str]:
    try:
        return tables.watch_frame(client.status())
    except HubUnreachable:
        message = f"Hub daemon is not running. Start it via '{PROG_NAME} start'."
    except HubHTTPError as exc:
        message = f"Unable to fetch live status: {exc}"
    return [f"\x1b[33m{message}\x1b[0m" if live else message]


def cmd_watch(cli: Cli, interval: float, count: int) -> None:
    """Print a snapshot every `interval` seconds; redraw in place on a terminal."""
    client = cli.client()
    echo("Watching hub manager (press Ctrl+C to stop)...")
    live, block, shown = interactive(), LiveBlock(), 0
    try:
        while True:
            lines = _watch_lines(client, live)
            if live:
                block.draw(lines)
            else:
                for line in lines:
                    echo(line)
            shown += 1
            if count and shown >= count:
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        echo()
        echo("Stopped watching hub manager")
