"""Per-invocation state shared by every command: the config path, then the config."""

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mlx_openai_server_hub.cli.output import fail
from mlx_openai_server_hub.client import HubClient, locate

if TYPE_CHECKING:
    from mlx_openai_server_hub.config import HubConfig

PROG_NAME = "mlx-openai-server-hub"


@dataclass
class Cli:
    """Per-invocation state: the config path, and the config once loaded."""

    config_path: Path
    _config: "HubConfig | None" = None

    def config(self) -> "HubConfig":
        """The loaded hub.yaml; a config problem ends the command with `Error: <msg>`."""
        if self._config is None:
            from mlx_openai_server_hub.config import ConfigError, load_config

            try:
                self._config = load_config(self.config_path)
            except ConfigError as exc:
                fail(str(exc))
        return self._config

    def client(self) -> HubClient:
        """A client for the hub this config describes (its runtime file first)."""
        cfg = self.config()
        location = locate(cfg.host, cfg.port, cfg.runtime_path)
        return HubClient(location, token_path=cfg.token_path)


def make_cli(config: Path | str | None) -> Cli:
    """State for a command run with `--config config` (None: env var or default)."""
    from mlx_openai_server_hub.config import resolve_config_path

    return Cli(resolve_config_path(config))
