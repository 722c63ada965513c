"""Quick checks of the fake worker (tests/fake_worker/), mostly against a real subprocess
on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import openai
import pytest

from mlx_openai_server_hub.worker_flags import parse_launch_help
from tests.conftest import FAKE_WORKER, free_port
from tests.fake_worker.options import parse_help_options

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PYPI_HELP = "worker-pypi-1.8.1-launch-help.txt"
JIT_HELP = "worker-jit-branch-1.3.12-launch-help.txt"
MODEL = "models/fake-lm"
MODEL_TYPES = ("lm", "multimodal", "image-generation", "image-edit", "embeddings", "whisper")
# What worker_flags.build_launch_args always passes, or passes when the worker lists it.
HUB_FLAGS = {"--model-path", "--model-type", "--host", "--port", "--log-level", "--no-log-file"}


def fake_env(**knobs: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAKE_")}
    return {**env, **knobs}


async def run_cli(*args: str, **knobs: str) -> tuple[int, str, str]:
    """Run the fake to completion (for commands that exit by themselves)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(FAKE_WORKER),
        *args,
        env=fake_env(**knobs),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@dataclass
class Worker:
    proc: asyncio.subprocess.Process
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key="x", max_retries=0)

    async def stdout_line(self, prefix: str) -> str:
        assert self.proc.stdout is not None
        while True:
            line = (await asyncio.wait_for(self.proc.stdout.readline(), 5)).decode()
            assert line, f"stdout closed before a line starting with {prefix!r}"
            if line.startswith(prefix):
                return line.strip()

    async def wait_exit(self, seconds: float = 5) -> int:
        return await asyncio.wait_for(self.proc.wait(), seconds)


async def wait_healthy(worker: Worker, seconds: float = 10) -> dict:
    deadline = asyncio.get_running_loop().time() + seconds
    async with aiohttp.ClientSession() as session:
        while True:
            assert worker.proc.returncode is None, "fake worker exited during start-up"
            with suppress(aiohttp.ClientConnectionError):
                async with session.get(f"{worker.url}/health") as resp:
                    if resp.status == 200:
                        return await resp.json()
            assert asyncio.get_running_loop().time() < deadline, "fake worker never got healthy"
            await asyncio.sleep(0.05)


@asynccontextmanager
async def fake_worker(*flags: str, ready: bool = True, **knobs: str) -> AsyncIterator[Worker]:
    """Start the fake in its own session; always SIGKILL its whole process group after."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(FAKE_WORKER),
        "launch",
        "--model-path",
        MODEL,
        "--model-type",
        "lm",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *flags,
        env=fake_env(**knobs),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    worker = Worker(proc, port)
    try:
        if ready:
            await wait_healthy(worker)
        yield worker
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with suppress(asyncio.TimeoutError):
            await asyncio.wait_for(proc.wait(), 5)


# --- command line -------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", [PYPI_HELP, JIT_HELP])
def test_help_fixtures_parse_alike_for_the_hub_and_the_fake(fixture: str) -> None:
    text = (FIXTURES / fixture).read_text()
    hub_view = parse_launch_help(text)
    fake_view = parse_help_options(text)
    assert set(fake_view) == hub_view.flags
    assert hub_view.flags >= HUB_FLAGS
    assert hub_view.choices["--model-type"] == MODEL_TYPES
    fake_choices = {name: tuple(spec.choices) for name, spec in fake_view.items() if spec.choices}
    assert fake_choices == hub_view.choices


@pytest.mark.parametrize(
    ("flavor", "fixture", "present", "absent"),
    [
        ("", PYPI_HELP, "--served-model-name", "--jit"),
        ("jit", JIT_HELP, "--jit", "--served-model-name"),
    ],
)
async def test_launch_help_flavors(flavor: str, fixture: str, present: str, absent: str) -> None:
    code, out, _ = await run_cli("launch", "--help", FAKE_WORKER_FLAVOR=flavor)
    assert code == 0
    assert out.startswith("Usage: mlx-openai-server launch [OPTIONS]")
    assert present in out and absent not in out
    assert out == (FIXTURES / fixture).read_text()


@pytest.mark.parametrize(
    ("flavor", "flags", "message"),
    [
        ("", ["--jit"], "Error: No such option: --jit"),
        ("", ["--bogus-flag", "1"], "Error: No such option: --bogus-flag"),
        ("jit", ["--served-model-name", "x"], "Error: No such option: --served-model-name"),
        ("", ["--port=abc"], "Error: Invalid value for '--port': 'abc' is not a valid integer."),
    ],
)
async def test_unknown_or_bad_flag_rejected(flavor: str, flags: list[str], message: str) -> None:
    args = ("launch", "--model-path", MODEL, "--no-log-file", *flags)
    code, out, err = await run_cli(*args, FAKE_WORKER_FLAVOR=flavor)
    assert code == 2
    assert message in err.splitlines()
    assert "fake worker pid=" not in out


# --- HTTP API -----------------------------------------------------------------------------


async def test_health_models_and_chat_with_openai_client() -> None:
    flags = ("--served-model-name", "fake", "--no-log-file", "--temperature", "0.5")
    async with fake_worker(*flags) as worker:
        health = await wait_healthy(worker)
        assert health == {
            "status": "ok",
            "model_id": MODEL,
            "model_status": "initialized (1 model(s))",
        }
        client = worker.client()
        models = await client.models.list()
        assert [model.id for model in models.data] == ["fake"]
        reply = await client.chat.completions.create(
            model="anything", messages=[{"role": "user", "content": "hello"}]
        )
        assert reply.choices[0].message.content == f"fake:{MODEL}:hello"
        assert reply.model_extra is not None
        fake_info = reply.model_extra["fake_worker"]
        assert fake_info == {"pid": worker.proc.pid, "port": worker.port, "model": "anything"}
        emb = await client.embeddings.create(model="fake", input=["a", "b"])
        assert len(emb.data) == 2 and len(emb.data[0].embedding) == 8
        again = await client.embeddings.create(model="fake", input="a", encoding_format="float")
        assert again.data[0].embedding == emb.data[0].embedding
        image = await client.images.generate(model="fake", prompt="cat")
        assert image.data and base64.b64decode(image.data[0].b64_json or "")[:4] == b"\x89PNG"
        text = await client.audio.transcriptions.create(model="fake", file=("a.wav", b"1234"))
        assert text.text == "fake transcription of a.wav (4 bytes) by fake"
        response = await client.responses.create(model="fake", input="hi")
        assert response.output_text == f"fake:{MODEL}:hi"
        await client.close()


async def test_bad_json_and_strict_model() -> None:
    async with fake_worker(FAKE_STRICT_MODEL="1") as worker, aiohttp.ClientSession() as http:
        url = f"{worker.url}/v1/chat/completions"
        async with http.post(url, data=b"{nope") as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["type"] == "invalid_request_error"
        body = {"model": "other", "messages": [{"role": "user", "content": "x"}]}
        async with http.post(url, json=body) as resp:
            assert resp.status == 404
            assert await resp.json() == {
                "error": {
                    "message": "The model `other` does not exist",
                    "type": "invalid_request_error",
                    "code": "model_not_found",
                }
            }
        async with http.post(url, json={**body, "model": MODEL}) as resp:
            assert resp.status == 200


async def test_streaming_with_openai_client() -> None:
    async with fake_worker(FAKE_STREAM_CHUNKS="2") as worker:
        client = worker.client()
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"fake_chunks": 3},
        )
        parts: list[str] = []
        finish = None
        usage = None
        async for chunk in stream:
            usage = chunk.usage or usage
            for choice in chunk.choices:
                parts.append(choice.delta.content or "")
                finish = choice.finish_reason or finish
        assert "".join(parts) == "tok0 tok1 tok2 "
        assert finish == "stop"
        assert usage is not None and usage.completion_tokens == 3
        default = await client.completions.create(model=MODEL, prompt="p", stream=True)
        texts = [choice.text async for chunk in default for choice in chunk.choices]
        assert "".join(texts) == "tok0 tok1 "
        await client.close()


async def test_hang_counts_in_queue_stats_and_health_still_answers() -> None:
    async with fake_worker(FAKE_JIT_UNLOADED="1") as worker, aiohttp.ClientSession() as http:
        assert (await wait_healthy(worker))["model_status"] == "unloaded"
        body = {"model": MODEL, "prompt": "x", "fake_hang": True}
        hung = asyncio.create_task(http.post(f"{worker.url}/v1/completions", json=body))
        stats: dict = {}
        for _ in range(100):  # until the hanging request is in flight
            async with http.get(f"{worker.url}/v1/queue/stats") as resp:
                stats = await resp.json()
            if stats["queue_stats"]["running"]:
                break
            await asyncio.sleep(0.02)
        assert stats == {"queue_stats": {"running": 1, "queued": 0, "max_concurrency": 1}}
        await asyncio.sleep(0.1)
        assert not hung.done()
        assert (await wait_healthy(worker))["status"] == "ok"
        hung.cancel()
        with suppress(asyncio.CancelledError):
            await hung


# --- faults and process life --------------------------------------------------------------


async def test_exit_at_start_after_delay() -> None:
    knobs = {"FAKE_START_DELAY": "0.3", "FAKE_EXIT_AT_START": "3"}
    async with fake_worker(ready=False, **knobs) as worker:
        assert (await worker.stdout_line("fake worker pid=")).endswith(f"port={worker.port}")
        with pytest.raises(OSError):  # not bound while "loading"
            socket.create_connection(("127.0.0.1", worker.port), timeout=1).close()
        assert await worker.wait_exit() == 3
        assert worker.proc.stderr is not None
        err = (await worker.proc.stderr.read()).decode()
        assert f"ERROR: failed to load model {MODEL}" in err


async def test_sigterm_exits_zero_quickly() -> None:
    async with fake_worker() as worker:
        worker.proc.send_signal(signal.SIGTERM)
        assert await worker.wait_exit(2) == 0


async def test_ignore_sigterm_needs_sigkill() -> None:
    async with fake_worker(FAKE_IGNORE_SIGTERM="1") as worker:
        os.killpg(worker.proc.pid, signal.SIGTERM)
        with pytest.raises(asyncio.TimeoutError):
            await worker.wait_exit(0.3)
        await wait_healthy(worker)
        os.killpg(worker.proc.pid, signal.SIGKILL)
        assert await worker.wait_exit() == -signal.SIGKILL


async def test_spawned_child_is_in_the_process_group() -> None:
    async with fake_worker(FAKE_SPAWN_CHILD="1") as worker:
        line = await worker.stdout_line("child pid=")
        child = int(line.removeprefix("child pid="))
        assert child != worker.proc.pid
        assert os.getpgid(child) == os.getpgid(worker.proc.pid) == worker.proc.pid


async def test_mid_stream_crash_leaves_an_incomplete_stream() -> None:
    async with fake_worker() as worker, aiohttp.ClientSession() as http:
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "x"}],
            "stream": True,
            "fake_chunks": 5,
            "fake_crash_after": 2,
        }
        received = b""
        async with http.post(f"{worker.url}/v1/chat/completions", json=body) as resp:
            assert resp.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                async for data in resp.content.iter_any():
                    received += data
        assert received.count(b"data: ") == 2
        assert b"[DONE]" not in received
        assert await worker.wait_exit() == 1
