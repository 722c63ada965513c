"""The hub's console copy of its log never holds it up, and hub.log has aiohttp's errors too."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time

import aiohttp

from tests.conftest import Hub, HubFactory, fake_model

# Each request logs an access line of ~250 bytes: 1,500 of them are several times what
# a pipe holds (64 KB on Linux, 16-64 KB on macOS).
REQUESTS = 1500


async def _requests(hub: Hub) -> list[int]:
    """REQUESTS health checks, 50 at a time, then the status: their HTTP statuses."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:

        async def get(path: str) -> int:
            async with http.get(f"{hub.url}{path}", headers=hub.auth) as resp:
                return resp.status

        statuses: list[int] = []
        for _ in range(REQUESTS // 50):
            statuses += await asyncio.gather(*(get("/health") for _ in range(50)))
        return [*statuses, await get("/hub/status")]


def test_a_hub_whose_stderr_is_not_read_keeps_answering(hub_factory: HubFactory) -> None:
    hub = hub_factory([fake_model("a", default=True)], start=False)
    # As `mlx-openai-server-hub serve 2>&1 | less` with less waiting at its first page.
    hub.proc = subprocess.Popen(
        hub.command(),
        env=hub.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert hub.proc.stdout is not None
    try:
        hub.wait_listening()
        assert asyncio.run(_requests(hub)) == [200] * (REQUESTS + 1)
        # hub.log has every request, though stderr stopped taking lines long ago.
        deadline = time.monotonic() + 10
        while (hub.log_path / "hub.log").read_text().count("path=/health ") < REQUESTS:
            assert time.monotonic() < deadline, "hub.log is missing access lines"
            time.sleep(0.1)
        # And it still stops cleanly, its workers first (the console is given up on).
        assert hub.terminate(timeout=10) == 0
        assert hub.leftovers() == []
    finally:
        hub.kill_everything()
        hub.proc.stdout.close()


def test_aiohttp_errors_go_to_the_hub_log(hub_factory: HubFactory) -> None:
    """A request aiohttp's parser refuses is logged in hub.log (before, only on stderr)."""
    hub = hub_factory([fake_model("a")])
    with socket.create_connection(("127.0.0.1", hub.port), timeout=10) as sock:
        sock.sendall(
            f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{hub.port}\r\nX: a\x01b\r\n\r\n".encode()
        )
        assert sock.recv(100).startswith(b"HTTP/1.0 400")
    deadline = time.monotonic() + 10
    log = hub.log_path / "hub.log"
    while "Invalid header value char" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.1)
    assert "| ERROR | Error handling request from 127.0.0.1" in log.read_text()
