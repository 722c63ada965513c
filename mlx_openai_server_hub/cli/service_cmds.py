"""`service install|uninstall|status`: the hub as a launchd or systemd login service."""

import sys

from mlx_openai_server_hub.cli.output import echo, fail, flash
from mlx_openai_server_hub.cli.state import PROG_NAME, Cli
from mlx_openai_server_hub.client import locate


def cmd_service_install(cli: Cli, dry_run: bool, systemd: bool, label: str) -> None:
    """Install (launchd plist or systemd user unit) and start the hub as a login service."""
    from mlx_openai_server_hub import service

    cfg = cli.config()
    label = label or service.DEFAULT_LABEL
    manager = service.service_manager(want_systemd=systemd)
    spec = service.service_spec(cfg)
    if dry_run:
        if manager == "systemd":
            sys.stdout.write(service.render_unit(spec, cfg.shutdown_grace))
        else:
            sys.stdout.write(service.render_plist(spec, label).decode("utf-8"))
        return
    if manager is None:
        fail(
            "launchd is macOS-only, so `service install` needs macOS. On Linux use "
            "`service install --systemd` for a systemd user unit, or `start` to run the hub "
            "in the background. (`service install --dry-run` shows the plist.)"
        )
    runtime = locate(cfg.host, cfg.port, cfg.runtime_path).runtime
    if runtime is not None:
        fail(
            f"A hub is already running (PID {runtime.get('pid')}); stop it first with "
            f"'{PROG_NAME} stop', so that the service can take its port"
        )
    try:
        if manager == "launchd":
            path = service.launchd_install(spec, label)
            flash("ok", f"Installed {path}")
            flash("info", f"Loaded into {service.launchd_domain()}: the hub runs now and at login")
        else:
            path = service.systemd_install(spec, cfg.shutdown_grace)
            flash("ok", f"Installed {path}")
            flash("info", "Enabled and started: the hub runs now and at login")
    except service.ServiceError as exc:
        fail(str(exc))
    echo(f"Logs: {spec.log_file}")


def cmd_service_uninstall(label: str) -> None:
    """launchd: bootout and delete the plist; systemd: disable --now and delete the unit."""
    from mlx_openai_server_hub import service

    manager = service.service_manager(want_systemd=True)
    if manager is None:
        fail("No supported service manager here (launchd is macOS-only)")
    try:
        if manager == "launchd":
            removed = service.launchd_uninstall(label or service.DEFAULT_LABEL)
        else:
            removed = service.systemd_uninstall()
    except service.ServiceError as exc:
        fail(str(exc))
    if removed is None:
        flash("info", "The service is not installed; nothing to remove")
    else:
        flash("ok", f"Removed {removed}")


def cmd_service_status(label: str) -> None:
    """Print the service manager's view of the hub service."""
    from mlx_openai_server_hub import service

    manager = service.service_manager(want_systemd=True)
    if manager is None:
        echo("Service manager: none (launchd is macOS-only)")
        return
    echo(f"Service manager: {manager}")
    if manager == "launchd":
        info = service.launchd_status(label or service.DEFAULT_LABEL)
    else:
        info = service.systemd_status()
    for key, value in info.items():
        echo(f"{key}: {value}")
