"""Fixtures for unit tests: the hub's real aiohttp app, built but not served."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from mlx_openai_server_hub.app import build_app
from mlx_openai_server_hub.auth import Auth
from mlx_openai_server_hub.config import load_config_text
from mlx_openai_server_hub.logs import LogFiles
from mlx_openai_server_hub.supervisor import Supervisor

ONE_MODEL = "models:\n  - {name: a, model_path: /m/a}\n"


@pytest.fixture
def hub_app(tmp_path: Path) -> Iterator[tuple[web.Application, Supervisor]]:
    """The app of a hub with one model `a` (nothing started, no socket)."""
    log_files = LogFiles()
    supervisor = Supervisor(load_config_text(ONE_MODEL, tmp_path / "hub.yaml"), log_files)
    yield build_app(supervisor, Auth("t" * 32, (), {"localhost"})), supervisor
    log_files.close()
