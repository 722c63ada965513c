"""A real hub subprocess on a free loopback port, with fake workers.

One copy for the tests (tests/conftest.py's `Hub`, `hub_factory`) and the benchmark
(benchmarks/hubs.py). `new_hub(HubProcess, folder, models, **top)` writes a hub.yaml
into `folder`; `start()` runs `python -m mlx_openai_server_hub --config <it> serve`
in its own session. Every process the hub starts inherits a marker in its environment,
so `kill_everything()` finds the workers too, even after the hub died.
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
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import psutil
import yaml

REPO = Path(__file__).resolve().parents[2]
FAKE_WORKER = REPO / "tests" / "fake_worker"
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
    """Every live process (hub or worker) started under this marker."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error):
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get(MARKER_ENV) == marker:
                found.append(proc)
    return found


class HubError(RuntimeError):
    """The hub exited or never listened, or a model never reached the state waited for."""


class HubProcess:
    """A hub subprocess, its hub.yaml and its control API."""

    def __init__(
        self,
        config_path: Path,
        port: int,
        marker: str,
        env: dict[str, str],
        token: str = TEST_TOKEN,
    ) -> None:
        self.config_path = config_path
        self.port = port
        self.marker = marker
        self.env = env
        self.url = f"http://127.0.0.1:{port}"
        self.token = token
        self.log_path = config_path.parent / "logs"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def auth(self) -> dict[str, str]:
        """The control token header."""
        return {"Authorization": f"Bearer {self.token}"}

    def write_config(self, models: list[dict[str, Any]], **top: Any) -> None:
        """(Re)write hub.yaml with these models, keeping host, port and paths."""
        doc: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.port,
            "log_path": str(self.log_path),
            "model_starting_port": free_port(),
        }
        doc.update(top)
        doc["models"] = models
        self.config_path.write_text(yaml.safe_dump(doc))

    def command(self) -> list[str]:
        """The hub's command line: `serve` with our hub.yaml."""
        config = ["--config", str(self.config_path)]
        return [sys.executable, "-m", "mlx_openai_server_hub", *config, "serve"]

    def start(self) -> None:
        """Start `serve` (output to serve.out next to hub.yaml); do not wait for it."""
        with open(self.config_path.parent / "serve.out", "ab") as out:
            self.proc = subprocess.Popen(
                self.command(),
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def wait_listening(self, timeout: float = 30.0, poll: float = 0.05) -> None:
        """Wait until the hub accepts connections; `HubError` if it dies or never does."""
        deadline = time.monotonic() + timeout
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HubError(f"hub exited with {self.proc.returncode}:\n{self.output()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return
            time.sleep(poll)
        raise HubError(f"hub did not listen within {timeout}s:\n{self.output()}")

    def output(self) -> str:
        """What the hub printed (stdout and stderr)."""
        path = self.config_path.parent / "serve.out"
        return path.read_text(errors="replace") if path.exists() else ""

    async def status(self, session: aiohttp.ClientSession | None = None) -> dict[str, Any]:
        """GET /hub/status (on `session`, else on a session of its own)."""
        async with (
            _session(session) as http,
            http.get(self.url + "/hub/status", headers=self.auth) as resp,
        ):
            if resp.status != 200:
                raise HubError(f"/hub/status: {resp.status} {await resp.text()}")
            return dict(await resp.json())

    async def model(
        self, name: str, session: aiohttp.ClientSession | None = None
    ) -> dict[str, Any]:
        """The status metadata of one model."""
        status = await self.status(session)
        entry = next(m for m in status["models"] if m["id"] == name)
        return dict(entry["metadata"])

    async def post(
        self, path: str, session: aiohttp.ClientSession | None = None, **kwargs: Any
    ) -> tuple[int, Any]:
        """POST to the hub with the token; (status, parsed JSON)."""
        async with (
            _session(session) as http,
            http.post(self.url + path, headers=self.auth, **kwargs) as resp,
        ):
            return resp.status, await resp.json(content_type=None)

    async def wait_for(
        self,
        name: str,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float = 20.0,
        session: aiohttp.ClientSession | None = None,
    ) -> dict[str, Any]:
        """Poll a model's status until `predicate(metadata)` holds (`HubError` on timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            meta = await self.model(name, session)
            if predicate(meta):
                return meta
            if time.monotonic() > deadline:
                raise HubError(f"model {name} never matched; last status {meta}")
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
        """Processes of this hub still alive (should be none after stop)."""
        return processes_with_marker(self.marker)

    def kill_everything(self, timeout: float = 15.0) -> None:
        """Clean-up: end the hub, then every process group carrying our marker."""
        with contextlib.suppress(Exception):
            self.terminate(timeout)
        for proc in self.leftovers():
            # A worker leads its own group: its helpers (no marker needed) go with it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(psutil.Error):
                proc.kill()


H = TypeVar("H", bound=HubProcess)


def new_hub(
    cls: type[H],
    folder: Path,
    models: list[dict[str, Any]],
    env: dict[str, str] | None = None,
    token: str = TEST_TOKEN,
    **top: Any,
) -> H:
    """A `cls` hub in `folder` (made if missing) with its hub.yaml written, not started.

    Its environment: ours plus the token and a fresh marker, without
    MLX_HUB_CONFIG_PATH (the hub.yaml is passed with --config), then `env`.
    """
    folder.mkdir(parents=True, exist_ok=True)
    marker = uuid.uuid4().hex
    full_env = {**os.environ, "MLX_HUB_TOKEN": token, MARKER_ENV: marker}
    full_env["MLX_HUB_ALLOW_UNGUARDED_WORKERS"] = "1"  # the fake worker cannot be guarded
    full_env.pop("MLX_HUB_CONFIG_PATH", None)
    full_env.update(env or {})
    hub = cls(folder / "hub.yaml", free_port(), marker, full_env, token)
    hub.write_config(models, **top)
    return hub


@contextlib.asynccontextmanager
async def _session(session: aiohttp.ClientSession | None) -> AsyncIterator[aiohttp.ClientSession]:
    """`session` itself, or a new one closed afterwards."""
    if session is not None:
        yield session
        return
    async with aiohttp.ClientSession() as own:
        yield own


def cached_snapshots(cache: Path, repo_ids: list[str]) -> dict[str, str]:
    """A Hugging Face cache at `cache` holding a (tiny) snapshot of each repo, and the
    environment that points a hub at it, offline: repo-id models then load at once
    instead of being downloaded first (the fake worker needs no real files)."""
    commit = "0" * 40
    for repo_id in repo_ids:
        repo = cache / ("models--" + repo_id.replace("/", "--"))
        (repo / "snapshots" / commit).mkdir(parents=True, exist_ok=True)
        (repo / "snapshots" / commit / "config.json").write_text("{}")
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(commit)
    return {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}


def chat(model: str, **extra: Any) -> dict[str, Any]:
    """A one-message chat completion body for `model`."""
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


async def post_json(hub: HubProcess, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """POST `payload` to the hub's chat completions: (status, JSON body)."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(hub.url + "/v1/chat/completions", json=payload) as resp,
    ):
        return resp.status, await resp.json(content_type=None)
