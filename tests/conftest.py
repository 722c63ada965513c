"""Shared fixtures: a real hub process on a free loopback port, with fake workers.

`hub_factory(models, **top_level)` writes a hub.yaml into a temporary folder
and starts `python -m mlx_openai_server_hub --config <it> serve` as a real
subprocess. Every hub (and every worker it started, found by a marker in
their environment) is ended when the test finishes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.hubs import (
    FAKE_WORKER,
    MARKER_ENV,
    REPO,
    TEST_TOKEN,
    HubError,
    HubProcess,
    fake_model,
    free_port,
    new_hub,
)

__all__ = ["FAKE_WORKER", "MARKER_ENV", "REPO", "TEST_TOKEN", "fake_model", "free_port"]


class Hub(HubProcess):
    """A hub subprocess and what a test needs to talk to it."""

    def start(self, wait: bool = True) -> None:
        """Start `serve` and wait until /health answers."""
        super().start()
        if wait:
            self.wait_healthy()

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Poll /health; fail with the hub's output if it dies or never answers."""
        try:
            self.wait_listening(timeout)
        except HubError as exc:
            pytest.fail(str(exc))


HubFactory = Callable[..., Hub]


@pytest.fixture
def hub_factory(tmp_path: Path) -> Iterator[HubFactory]:
    """Start real hubs: `hub_factory(models, start=True, env=None, **top_level_keys)`."""
    hubs: list[Hub] = []

    def make(
        models: list[dict[str, Any]],
        *,
        start: bool = True,
        env: dict[str, str] | None = None,
        **top: Any,
    ) -> Hub:
        hub = new_hub(Hub, tmp_path / f"hub{len(hubs)}", models, env, **top)
        hubs.append(hub)
        if start:
            hub.start()
        return hub

    yield make
    for hub in hubs:
        hub.kill_everything()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain aiohttp client session."""
    async with aiohttp.ClientSession() as session:
        yield session
