"""Shared fixtures: a real hub process on a free loopback port, with fake workers.

`hub_factory(models, **top_level)` writes a hub.yaml into a temporary folder
and starts `python -m mlx_openai_server_hub --config <it> serve` as a real
subprocess. Every hub (and every worker it started, found by a marker in
their environment) is ended when the test finishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
FAKE_WORKER = REPO / "tests" / "fake_worker.py"
TEST_TOKEN = "test-token-0123456789"
MARKER_ENV = "MLX_HUB_TEST_MARKER"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fake_model(name: str, **extra: Any) -> dict[str, Any]:
    """A hub.yaml model entry served by the fake worker (knobs via `env`)."""
    entry: dict[str, Any] = {
        "name": name,
        "model_path": f"/models/{name}",
        "worker_command": [sys.executable, str(FAKE_WORKER)],
    }
    entry.update(extra)
    return entry


def processes_with_marker(marker: str) -> list[psutil.Process]:
    """Every live process (hub or worker) started under this test's marker."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error):
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get(MARKER_ENV) == marker:
                found.append(proc)
    return found


class Hub:
    """A hub subprocess and what a test needs to talk to it."""

    def __init__(self, config_path: Path, port: int, marker: str, env: dict[str, str]) -> None:
        self.config_path = config_path
        self.port = port
        self.marker = marker
        self.env = env
        self.url = f"http://127.0.0.1:{port}"
        self.token = TEST_TOKEN
        self.log_path = config_path.parent / "logs"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def auth(self) -> dict[str, str]:
        """The control token header."""
        return {"Authorization": f"Bearer {self.token}"}

    def start(self, wait: bool = True) -> None:
        """Start `serve` and wait until /health answers."""
        out = open(self.config_path.parent / "serve.out", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlx_openai_server_hub",
                "--config",
                str(self.config_path),
                "serve",
            ],
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        out.close()
        if wait:
            self.wait_healthy()

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Poll /health; fail with the hub's output if it dies or never answers."""
        deadline = time.monotonic() + timeout
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"hub exited with {self.proc.returncode}:\n{self.output()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return
            time.sleep(0.05)
        pytest.fail(f"hub did not listen within {timeout}s:\n{self.output()}")

    def output(self) -> str:
        """What the hub printed (stdout and stderr)."""
        path = self.config_path.parent / "serve.out"
        return path.read_text(errors="replace") if path.exists() else ""

    def write_config(self, models: list[dict[str, Any]], **top: Any) -> None:
        """Rewrite hub.yaml (for reload tests), keeping host, port and paths."""
        self.config_path.write_text(yaml.safe_dump(_document(self, models, top)))

    async def status(self) -> dict[str, Any]:
        """GET /hub/status."""
        async with (
            aiohttp.ClientSession() as session,
            session.get(self.url + "/hub/status", headers=self.auth) as resp,
        ):
            assert resp.status == 200, await resp.text()
            return dict(await resp.json())

    async def model(self, name: str) -> dict[str, Any]:
        """The status metadata of one model."""
        status = await self.status()
        entry = next(m for m in status["models"] if m["id"] == name)
        return dict(entry["metadata"])

    async def post(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        """POST to the hub with the token; (status, parsed JSON)."""
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.url + path, headers=self.auth, **kwargs) as resp,
        ):
            return resp.status, await resp.json(content_type=None)

    async def wait_for(
        self, name: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 20.0
    ) -> dict[str, Any]:
        """Poll a model's status until `predicate(metadata)` holds."""
        deadline = time.monotonic() + timeout
        while True:
            meta = await self.model(name)
            if predicate(meta):
                return meta
            if time.monotonic() > deadline:
                pytest.fail(f"model {name} never matched; last status {meta}")
            await asyncio.sleep(0.05)

    def terminate(self, timeout: float = 30.0) -> int | None:
        """SIGTERM the hub and wait for it; SIGKILL its group if it hangs."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode

    def leftovers(self) -> list[psutil.Process]:
        """Processes of this hub's test still alive (should be none after stop)."""
        return processes_with_marker(self.marker)

    def kill_everything(self) -> None:
        """Test clean-up: end the hub and anything carrying our marker."""
        with contextlib.suppress(Exception):
            self.terminate(timeout=15)
        for proc in self.leftovers():
            with contextlib.suppress(psutil.Error):
                proc.kill()


def _document(hub: Hub, models: list[dict[str, Any]], top: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": hub.port,
        "log_path": str(hub.log_path),
        "model_starting_port": free_port(),
    }
    doc.update(top)
    doc["models"] = models
    return doc


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
        folder = tmp_path / f"hub{len(hubs)}"
        folder.mkdir()
        marker = uuid.uuid4().hex
        full_env = {**os.environ, "MLX_HUB_TOKEN": TEST_TOKEN, MARKER_ENV: marker}
        full_env.pop("MLX_HUB_CONFIG_PATH", None)
        full_env.update(env or {})
        hub = Hub(folder / "hub.yaml", free_port(), marker, full_env)
        hub.write_config(models, **top)
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
