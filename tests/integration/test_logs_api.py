"""`GET /hub/logs` against a real hub: last lines, errors, follow across rotation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import Hub, HubFactory, fake_model

MODELS = [fake_model("alpha"), fake_model("quiet", no_log_file=True)]


@pytest.fixture
def hub(hub_factory: HubFactory) -> Hub:
    """A hub whose models are never started: the tests write alpha's log themselves."""
    return hub_factory(MODELS)


def append(path: Path, *lines: str) -> None:
    with path.open("a") as fh:
        fh.write("".join(f"{line}\n" for line in lines))


async def events(resp: aiohttp.ClientResponse) -> AsyncIterator[str]:
    """The `data` of each server-sent event (comments skipped)."""
    data: list[str] = []
    async for raw in resp.content:
        line = raw.decode().rstrip("\r\n")
        if line.startswith("data: "):
            data.append(line.removeprefix("data: "))
        elif not line and data:
            yield "\n".join(data)
            data = []


async def next_events(stream: AsyncIterator[str], count: int) -> list[str]:
    return [await asyncio.wait_for(anext(stream), 10) for _ in range(count)]


async def test_last_lines_of_a_model_log_and_of_the_hub_log(hub: Hub, http) -> None:
    log = hub.log_path / "alpha.log"
    append(log, *(f"line {i}" for i in range(1, 151)))

    async with http.get(f"{hub.url}/hub/logs?model=alpha&lines=3", headers=hub.auth) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        assert await resp.text() == "line 148\nline 149\nline 150\n"
    async with http.get(f"{hub.url}/hub/logs?model=alpha", headers=hub.auth) as resp:
        lines = (await resp.text()).splitlines()
    assert lines == [f"line {i}" for i in range(51, 151)]  # 100 by default

    async with http.get(f"{hub.url}/hub/logs?lines=1000", headers=hub.auth) as resp:
        assert resp.status == 200
        text = await resp.text()
    assert "Hub listening on" in text
    assert text.endswith("\n") and text in (hub.log_path / "hub.log").read_text()


@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        ("model=nope", 404, "Model 'nope' not found"),
        ("model=quiet", 404, "has no log file"),
        ("lines=0", 400, "'lines' must be"),
        ("lines=10001", 400, "'lines' must be"),
        ("lines=ten", 400, "'lines' must be"),
        ("follow=maybe", 400, "'follow' must be"),
    ],
)
async def test_bad_requests_get_an_error_envelope(
    hub: Hub, http, query: str, status: int, message: str
) -> None:
    for path in ("/hub/logs", "/hub/logs/view"):
        if path.endswith("view") and not query.startswith("model="):
            continue  # the view takes only `model`
        async with http.get(f"{hub.url}{path}?{query}", headers=hub.auth) as resp:
            assert resp.status == status
            assert message in (await resp.json())["error"]["message"]


async def test_the_token_is_needed(hub: Hub, http) -> None:
    for path in ("/hub/logs", "/hub/logs?follow=1", "/hub/logs/view"):
        async with http.get(hub.url + path) as resp:
            assert resp.status == 401


async def test_follow_sends_new_lines_across_rotation_and_truncation(hub: Hub, http) -> None:
    log = hub.log_path / "alpha.log"
    append(log, "one", "two", "three")
    url = f"{hub.url}/hub/logs?model=alpha&lines=2&follow=1"
    async with http.get(url, headers=hub.auth) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/event-stream"
        stream = events(resp)
        assert await next_events(stream, 2) == ["two", "three"]

        append(log, "four", "")
        assert await next_events(stream, 2) == ["four", ""]

        # Rotation as logs.py does it: the old file gets its last line, then is renamed.
        append(log, "five")
        log.rename(log.with_name("alpha.log.1"))
        await asyncio.sleep(0.6)
        append(log, "six")
        assert await next_events(stream, 2) == ["five", "six"]

        log.write_text("")  # truncated in place
        await asyncio.sleep(0.6)
        append(log, "seven")
        assert await next_events(stream, 1) == ["seven"]


async def test_follow_of_a_log_not_written_yet_waits_for_it(hub: Hub, http) -> None:
    url = f"{hub.url}/hub/logs?model=alpha&lines=0&follow=1"
    async with http.get(url, headers=hub.auth) as resp:
        assert resp.status == 200
        stream = events(resp)
        await asyncio.sleep(0.6)
        append(hub.log_path / "alpha.log", "first")
        assert await next_events(stream, 1) == ["first"]


async def test_an_open_follow_does_not_hold_the_hub_shutdown(hub: Hub, http) -> None:
    async with http.get(f"{hub.url}/hub/logs?follow=1", headers=hub.auth) as resp:
        assert resp.status == 200
        stream = events(resp)
        await next_events(stream, 1)
        started = time.monotonic()
        assert await asyncio.to_thread(hub.terminate, 20) == 0
        assert time.monotonic() - started < 10
        # The stream ends (cleanly or cut), it does not hang.
        with pytest.raises((StopAsyncIteration, aiohttp.ClientError)):
            while True:
                await asyncio.wait_for(anext(stream), 10)
