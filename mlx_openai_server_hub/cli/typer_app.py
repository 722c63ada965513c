"""The Typer surface: options, arguments and help texts; each command calls a `cmd_*`.

Importing this module is cheap; `build_app()` imports Typer (and, through it, pydantic).
"""

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from mlx_openai_server_hub import __version__
from mlx_openai_server_hub.cli.daemon import cmd_serve, cmd_start, cmd_stop
from mlx_openai_server_hub.cli.fast_status import cmd_status
from mlx_openai_server_hub.cli.hub_cmds import (
    cmd_memory_action,
    cmd_process_action,
    cmd_reload,
    cmd_watch,
)
from mlx_openai_server_hub.cli.init import cmd_init
from mlx_openai_server_hub.cli.logs import cmd_logs
from mlx_openai_server_hub.cli.output import echo
from mlx_openai_server_hub.cli.progress import clean_names
from mlx_openai_server_hub.cli.pull_cmd import cmd_pull
from mlx_openai_server_hub.cli.service_cmds import (
    cmd_service_install,
    cmd_service_status,
    cmd_service_uninstall,
)
from mlx_openai_server_hub.cli.state import PROG_NAME, Cli, make_cli

if TYPE_CHECKING:
    import typer

CONFIG_HELP = (
    "Path to hub YAML (default: ~/mlx-openai-server-hub/hub.yaml, or $MLX_HUB_CONFIG_PATH)"
)


def build_app() -> "typer.Typer":
    """The Typer application (imports Typer, and through it pydantic: ~0.2 s)."""
    import typer

    app = typer.Typer(
        name=PROG_NAME,
        help="Manage hub-based multi-model deployments",
        rich_markup_mode=None,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    class ModelsCommand(typer.core.TyperCommand):
        """Usage reads `MODEL_NAMES...`, as in the reference, not Typer's `{MODEL_NAMES}...`."""

        def collect_usage_pieces(self, ctx: Any) -> list[str]:
            pieces = super().collect_usage_pieces(ctx)
            return [p[1 : p.index("}")] if p.startswith("{") else p for p in pieces]

    def state(ctx: typer.Context) -> Cli:
        obj = ctx.find_root().obj
        assert isinstance(obj, Cli)
        return obj

    def required_names(ctx: typer.Context, names: list[str]) -> list[str]:
        cleaned = clean_names(names)
        if not cleaned:
            ctx.fail("Missing argument 'MODEL_NAMES...'.")
        return cleaned

    def show_version(value: bool) -> None:
        if value:
            echo(f"{PROG_NAME} {__version__}")
            raise typer.Exit()

    # The metavar carries the "..." so click's "Missing argument 'MODEL_NAMES...'" does too.
    model_names_arg = typer.Argument(
        help="Model names", metavar="MODEL_NAMES...", show_default=False
    )
    optional_names_arg = typer.Argument(
        help="Only these models", metavar="MODEL_NAMES", show_default=False
    )

    @app.callback(invoke_without_command=True)
    def root(
        ctx: typer.Context,
        config: Annotated[
            Path | None,
            typer.Option("--config", metavar="PATH", help=CONFIG_HELP, show_default=False),
        ] = None,
        version: Annotated[
            bool,
            typer.Option("--version", callback=show_version, is_eager=True, help="Show version."),
        ] = False,
    ) -> None:
        """Manage hub-based multi-model deployments. With no command: `start`."""
        ctx.obj = make_cli(config)
        if ctx.invoked_subcommand is None:
            cmd_start(ctx.obj, None, no_wait=False)

    @app.command(help="Start the hub manager")
    def start(
        ctx: typer.Context,
        model_names: Annotated[
            list[str] | None,
            typer.Argument(
                help="Models to start as well as the defaults",
                metavar="MODEL_NAMES",
                show_default=False,
            ),
        ] = None,
        no_wait: Annotated[
            bool, typer.Option("--no-wait", help="Don't wait for models to finish loading.")
        ] = False,
    ) -> None:
        cmd_start(state(ctx), model_names, no_wait)

    @app.command(help="Show hub configuration and running processes")
    def status(
        ctx: typer.Context,
        model_names: Annotated[list[str] | None, optional_names_arg] = None,
    ) -> None:
        cmd_status(state(ctx), model_names)

    @app.command(help="Reload hub.yaml and reconcile model processes")
    def reload(ctx: typer.Context) -> None:
        cmd_reload(state(ctx))

    @app.command(help="Stop the hub manager and all models")
    def stop(ctx: typer.Context) -> None:
        cmd_stop(state(ctx))

    @app.command("start-model", cls=ModelsCommand, help="Start one or more model processes")
    def start_model(ctx: typer.Context, model_names: Annotated[list[str], model_names_arg]) -> None:
        cmd_process_action(state(ctx), required_names(ctx, model_names), "start")

    @app.command("stop-model", cls=ModelsCommand, help="Stop one or more model processes")
    def stop_model(ctx: typer.Context, model_names: Annotated[list[str], model_names_arg]) -> None:
        cmd_process_action(state(ctx), required_names(ctx, model_names), "stop")

    @app.command(
        "load-model", cls=ModelsCommand, help="Load handlers for one or more models into memory"
    )
    def load_model(ctx: typer.Context, model_names: Annotated[list[str], model_names_arg]) -> None:
        cmd_memory_action(state(ctx), model_names, "load")

    @app.command(
        "unload-model", cls=ModelsCommand, help="Unload handlers for one or more models from memory"
    )
    def unload_model(
        ctx: typer.Context, model_names: Annotated[list[str], model_names_arg]
    ) -> None:
        cmd_memory_action(state(ctx), model_names, "unload")

    @app.command(
        cls=ModelsCommand,
        help="Download models (hub.yaml names or Hugging Face repo ids) without loading them",
    )
    def pull(
        ctx: typer.Context,
        targets: Annotated[
            list[str],
            typer.Argument(
                help="Model names from hub.yaml, or repo ids (org/name)",
                metavar="NAME|REPO...",
                show_default=False,
            ),
        ],
    ) -> None:
        cmd_pull(state(ctx), clean_names(targets))

    @app.command(help="Continuously print live hub manager status")
    def watch(
        ctx: typer.Context,
        interval: Annotated[
            float, typer.Option(min=0.5, help="Seconds between snapshots (at least 0.5).")
        ] = 5.0,
        count: Annotated[
            int, typer.Option(min=0, help="Stop after this many snapshots (0: until Ctrl+C).")
        ] = 0,
    ) -> None:
        cmd_watch(state(ctx), interval, count)

    @app.command(help="Print or follow the hub's log, or a model's log")
    def logs(
        ctx: typer.Context,
        model: Annotated[
            str | None,
            typer.Argument(
                help="Show this model's log instead of the hub's",
                metavar="MODEL",
                show_default=False,
            ),
        ] = None,
        follow: Annotated[
            bool, typer.Option("--follow", "-f", help="Keep printing new lines (Ctrl+C stops).")
        ] = False,
        lines: Annotated[
            int, typer.Option("--lines", "-n", min=0, help="Lines from the end to show (0: all).")
        ] = 100,
    ) -> None:
        cmd_logs(state(ctx), model, follow, lines)

    @app.command(help="Run the hub in the foreground (what `start` runs in the background)")
    def serve(
        ctx: typer.Context,
        no_stderr_log: Annotated[
            bool, typer.Option("--no-stderr-log", help="Log only to <log_path>/hub.log.")
        ] = False,
    ) -> None:
        cmd_serve(state(ctx), no_stderr_log)

    @app.command(help="Write a commented starter hub.yaml (never overwrites one)")
    def init(
        ctx: typer.Context,
        demo: Annotated[
            bool,
            typer.Option("--demo", help="Also build a tiny local model and use it."),
        ] = False,
        worker_command: Annotated[
            Path | None,
            typer.Option(
                "--worker-command",
                metavar="PATH",
                help="The mlx-openai-server executable (default: beside this Python, "
                "else on PATH).",
                show_default=False,
            ),
        ] = None,
        model_path: Annotated[
            str | None,
            typer.Option(
                "--model-path",
                metavar="PATH",
                help="Model for the starter entry (a local folder or a Hugging Face id).",
                show_default=False,
            ),
        ] = None,
    ) -> None:
        cmd_init(state(ctx), demo, worker_command, model_path)

    app.add_typer(_build_service_app(typer, state), name="service")
    return app


def _build_service_app(typer: Any, state: Callable[[Any], Cli]) -> "typer.Typer":
    service_app = typer.Typer(
        help="Run the hub as a login service (launchd on macOS; --systemd on Linux)",
        rich_markup_mode=None,
        no_args_is_help=True,
    )
    label_option = typer.Option(
        "--label", metavar="LABEL", help="The launchd label.", show_default=False
    )

    @service_app.command("install", help="Install the hub as a login service and start it")
    def install(
        ctx: typer.Context,
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Print the plist (or unit); change nothing.")
        ] = False,
        systemd: Annotated[
            bool, typer.Option("--systemd", help="Linux: install a systemd user unit.")
        ] = False,
        label: Annotated[str, label_option] = "",
    ) -> None:
        cmd_service_install(state(ctx), dry_run, systemd, label)

    @service_app.command("uninstall", help="Stop the login service and remove it")
    def uninstall(label: Annotated[str, label_option] = "") -> None:
        cmd_service_uninstall(label)

    @service_app.command("status", help="Show whether the login service is installed")
    def status(label: Annotated[str, label_option] = "") -> None:
        cmd_service_status(label)

    return service_app
