"""Building a worker: its command, environment, flags (from `launch --help`) and log."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import attrs

from .auth import TOKEN_ENV_VAR
from .config import ModelConfig
from .errors import HubError
from .launch_help import LaunchHelpCache, Spawn
from .logs import LogFiles
from .worker import WorkerProcess, resolve_worker_command
from .worker_flags import JIT_FLAG, build_launch_args
from .worker_shim import SECRET_ENV, guarded_command, worker_secret

# Set to 1 by whoever accepts that workers the hub cannot guard answer anyone local (the
# test suite's fake worker): the status then does not warn about their ports.
UNGUARDED_OK_ENV = "MLX_HUB_ALLOW_UNGUARDED_WORKERS"


@attrs.frozen
class PreparedWorker:
    """A worker ready to spawn, and the configured options its flags leave out."""

    worker: WorkerProcess
    warnings: list[str]


class Launcher:
    """Builds and spawns `mlx-openai-server launch ...` for a model."""

    def __init__(
        self, config_path: Path, help_store: Path | None, log_files: LogFiles, spawn: Spawn
    ) -> None:
        self.config_path = config_path
        self._log_files = log_files
        self._help = LaunchHelpCache(help_store, spawn)

    def command_and_env(self, cfg: ModelConfig) -> tuple[list[str], dict[str, str]]:
        """The worker command for `cfg` and the environment it runs with."""
        command = resolve_worker_command(cfg.worker_command, self.config_path)
        # A worker has no use for the hub's control token: keep it out of its reach.
        inherited = {k: v for k, v in os.environ.items() if k != TOKEN_ENV_VAR}
        return command, {**inherited, "PYTHONUNBUFFERED": "1", **cfg.env}

    def warm_help(self, cfg: ModelConfig) -> Coroutine[Any, Any, Any] | None:
        """A coroutine that reads the worker's `launch --help` ahead of its first load.

        A JIT model's first request would otherwise wait for it on top of the
        worker's own start (3.6 s for the real worker here). None when the
        command cannot even be resolved: the first load reports that.
        """
        with contextlib.suppress(HubError):
            command, env = self.command_and_env(cfg)
            return self._help.options_for(command, env, cfg.env)
        return None

    async def supports_standby(self, cfg: ModelConfig) -> bool:
        """Whether this model's worker command takes `--jit` (so it can wait warm)."""
        command, env = self.command_and_env(cfg)
        options = await self._help.options_for(command, env, cfg.env)
        return JIT_FLAG in options.flags

    async def prepare(
        self,
        cfg: ModelConfig,
        host: str,
        lease_port: Callable[[], int],
        standby: bool = False,
    ) -> PreparedWorker:
        """The worker for `cfg`, not spawned yet: the caller owns it before its process
        exists, so a cancelled spawn leaves nothing behind. `lease_port` is asked last,
        right before the worker binds it (reading `launch --help` can take seconds)."""
        command, env = self.command_and_env(cfg)
        options = await self._help.options_for(command, env, cfg.env)
        port = lease_port()
        args, warnings = build_launch_args(cfg, host, port, options, standby)
        guarded = guarded_command(command)
        if guarded is None:
            if os.environ.get(UNGUARDED_OK_ENV) != "1":
                warnings = [*warnings, _open_port_warning(cfg.name, command)]
        else:
            command, env = guarded, {**env, SECRET_ENV: worker_secret()}
        log = None
        if cfg.log_file is not None:
            log = self._log_files.open(f"mlx_hub.models.{cfg.name}", cfg.log_file)
        worker = WorkerProcess(cfg.name, [*command, *args], env, host, port, log)
        return PreparedWorker(worker, warnings)


def _open_port_warning(name: str, command: list[str]) -> str:
    return (
        f"Model '{name}': '{' '.join(command)}' is not a known mlx-openai-server script, so "
        "its worker port is not guarded: any local process can call it around api_keys"
    )
