"""Issue 16 §3: a real worker's port refuses everyone but the hub, on both worker lines.

Before the shim, the worker answered anyone on 127.0.0.1 (and, with its CORS
`allow_origins=["*"]`, any web page the user had open), whatever `api_keys` said.
"""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from mlx_openai_server_hub.launcher import UNGUARDED_OK_ENV
from mlx_openai_server_hub.worker_shim import SECRET_HEADER
from tests.conftest import HubFactory
from tests.e2e.conftest import real_model
from tests.e2e.worker_support import RealWorker, worker_secret_headers

API_KEY = "sk-worker-guard-0123456789"
CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@pytest.mark.e2e
async def test_the_worker_port_refuses_requests_without_the_hub_secret(
    hub_factory: HubFactory, tiny_model: Path, real_worker: RealWorker
) -> None:
    hub = hub_factory(
        [real_model("tiny", tiny_model, real_worker, default=True)],
        env={UNGUARDED_OK_ENV: ""},  # the status must not need to be told to keep quiet
        api_keys=[API_KEY],
    )
    meta = await hub.wait_for("tiny", lambda m: m["memory_state"] == "loaded", timeout=150)
    worker = f"http://127.0.0.1:{meta['port']}"
    evil_page = {"Origin": "https://evil.example"}
    attempts = [
        ("GET", "/health", {}),
        ("GET", "/v1/models", {}),
        ("POST", "/v1/chat/completions", {"Content-Type": "application/json"}),
        ("POST", "/v1/chat/completions", {**evil_page, "Content-Type": "text/plain"}),
        ("OPTIONS", "/v1/chat/completions", {**evil_page, "Access-Control-Request-Method": "POST"}),
        ("GET", "/health", {SECRET_HEADER: "wrong"}),
        ("GET", "/health", {SECRET_HEADER: ""}),
    ]
    async with aiohttp.ClientSession() as session:
        for method, path, headers in attempts:
            body = json.dumps(CHAT) if method == "POST" else None
            async with session.request(method, worker + path, headers=headers, data=body) as resp:
                assert resp.status == 403, (method, path, headers, resp.status)
                assert "Access-Control-Allow-Origin" not in resp.headers
        # The hub's own header opens it; the hub itself still serves, behind api_keys.
        secret = worker_secret_headers(meta["port"])
        async with session.get(worker + "/health", headers=secret) as resp:
            assert resp.status == 200
        auth = {"Authorization": f"Bearer {API_KEY}"}
        async with session.post(hub.url + "/v1/chat/completions", json=CHAT, headers=auth) as resp:
            assert resp.status == 200, await resp.text()
        async with session.post(hub.url + "/v1/chat/completions", json=CHAT) as resp:
            assert resp.status == 401
    status = await hub.status()
    assert not any("not guarded" in w for w in status["warnings"]), status["warnings"]
