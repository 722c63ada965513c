"""Request ids, the access-log line, usage extraction, and the middleware on a real socket."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from mlx_openai_server_hub.access_log import (
    STREAM_TAIL_BYTES,
    StreamTail,
    Usage,
    access_record,
    request_id_from,
    setup_access_log,
    usage_from_json,
)
from mlx_openai_server_hub.errors import HubError, error_body
from mlx_openai_server_hub.metrics import HubMetrics


def test_a_sane_client_request_id_is_kept_others_are_replaced():
    assert request_id_from("abc-123_X.y") == "abc-123_X.y"
    assert request_id_from("x" * 128) == "x" * 128
    for bad in (None, "", "x" * 129, "tab\there", "é-unicode", " padded ", "nul\x00"):
        new = request_id_from(bad)
        assert new != bad and len(new) == 32 and new.isalnum()
    assert request_id_from(None) != request_id_from(None)


def test_usage_from_a_non_streaming_body():
    body = {
        "id": "x",
        "choices": [{"message": {"content": 'say "usage": {"prompt_tokens": 999}'}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42},
    }
    assert usage_from_json(json.dumps(body).encode()) == Usage(12, 30)
    embeddings = {"data": [{"embedding": [0.1] * 1000}], "usage": {"prompt_tokens": 7}}
    assert usage_from_json(json.dumps(embeddings).encode()) == Usage(7, None)
    responses = {"output": [], "usage": {"input_tokens": 3, "output_tokens": 4}}
    assert usage_from_json(json.dumps(responses).encode()) == Usage(3, 4)
    # The text inside a string is escaped: never mistaken for the usage key.
    assert usage_from_json(json.dumps({"text": '"usage": {"prompt_tokens": 5}'}).encode()) is None
    assert usage_from_json(b'{"usage": "a lot"}') is None
    assert usage_from_json(b'{"usage": {"prompt_tokens": true}}') is None
    assert usage_from_json(b"not json at all") is None
    assert usage_from_json(b'{"usage": {"prompt_tokens": 5') is None  # cut short


def _sse(events: list[dict]) -> list[bytes]:
    return [f"data: {json.dumps(e)}\n\n".encode() for e in events] + [b"data: [DONE]\n\n"]


def test_usage_from_the_final_sse_chunk_of_a_long_stream():
    tail = StreamTail()
    chunk = {"choices": [{"delta": {"content": "tok " * 20}}], "usage": None}
    events = [chunk] * 2000 + [
        {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2000}}
    ]
    sent = 0
    for piece in _sse(events):
        tail.feed(piece)
        sent += len(piece)
    assert tail.bytes == sent
    assert sum(map(len, tail._parts)) == tail._kept <= 2 * STREAM_TAIL_BYTES  # bounded
    assert tail.usage() == Usage(9, 2000)


def test_a_stream_without_usage_reports_none():
    tail = StreamTail()
    for piece in _sse([{"choices": [{"delta": {"content": "hi"}}], "usage": None}] * 3):
        tail.feed(piece)
    assert tail.usage() is None
    empty = StreamTail()
    assert empty.usage() is None


def test_a_final_chunk_split_across_reads_is_still_found():
    whole = b"".join(_sse([{"usage": {"prompt_tokens": 1, "completion_tokens": 2}}]))
    tail = StreamTail()
    for i in range(0, len(whole), 7):
        tail.feed(whole[i : i + 7])
    assert tail.usage() == Usage(1, 2)


# ------------------------------------------------------------ the middleware


def _app(metrics: HubMetrics) -> web.Application:
    async def chat(request: web.Request) -> web.StreamResponse:
        record = access_record(request)
        assert record is not None
        record.model = "qwen"
        record.queue_wait = 0.25
        record.mark_first_byte()
        body = {"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 6}}
        record.usage = usage_from_json(json.dumps(body).encode())
        return web.json_response(body)

    async def stream(request: web.Request) -> web.StreamResponse:
        record = access_record(request)
        assert record is not None
        record.model = "qwen"
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        record.mark_first_byte()
        final = [{"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 3}}]
        for piece in _sse(final):
            record.stream_tail().feed(piece)
            await response.write(piece)
        await response.write_eof()
        return response

    async def fail(_request: web.Request) -> web.StreamResponse:
        raise HubError("Model 'qwen' is busy", 429, headers={"Retry-After": "3"})

    @web.middleware
    async def errors(request: web.Request, handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except HubError as exc:
            return exc.response()

    app = web.Application(middlewares=[errors])
    setup_access_log(app, metrics)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/stream", stream)
    app.router.add_get("/fail", fail)
    return app


@pytest.fixture
async def served() -> AsyncIterator[tuple[TestClient, HubMetrics]]:
    metrics = HubMetrics()
    client = TestClient(TestServer(_app(metrics), host="127.0.0.1"))
    await client.start_server()
    try:
        yield client, metrics
    finally:
        await client.close()


async def test_request_id_round_trip_process_time_and_the_log_line(served, caplog):
    client, metrics = served
    caplog.set_level(logging.INFO, logger="mlx_hub.access")
    secret = "sk-very-secret-key"
    response = await client.post(
        "/v1/chat/completions?token=hunter2",
        json={"model": "qwen", "messages": [{"role": "user", "content": "my secret prompt"}]},
        headers={"X-Request-ID": "client-id-1", "Authorization": f"Bearer {secret}"},
    )
    assert response.status == 200
    assert response.headers["X-Request-ID"] == "client-id-1"
    assert float(response.headers["X-Process-Time"]) >= 0
    lines = [r.getMessage() for r in caplog.records if r.name == "mlx_hub.access"]
    assert len(lines) == 1
    line = lines[0]
    for part in (
        "id=client-id-1",
        "client=127.0.0.1",
        "method=POST",
        "path=/v1/chat/completions ",
        "model=qwen",
        "status=200",
        "queue_wait=0.250",
        "prompt_tokens=4",
        "completion_tokens=6",
    ):
        assert part in line
    assert "ttfb=0.0" in line and " total=" in line and " bytes=" in line
    sent = int(line.split(" bytes=")[1].split()[0])
    assert sent > len(await response.read())  # the headers are counted too
    for leak in (secret, "hunter2", "?", "secret prompt", "Bearer"):
        assert leak not in line
    text = metrics.exposition().decode()
    assert 'mlx_hub_prompt_tokens_total{model="qwen"} 4.0' in text
    assert (
        'mlx_hub_requests_total{endpoint="/v1/chat/completions",model="qwen",status="2xx"} 1.0'
        in text
    )


async def test_a_stream_is_logged_with_its_final_usage(served, caplog):
    client, metrics = served
    caplog.set_level(logging.INFO, logger="mlx_hub.access")
    response = await client.post("/v1/stream", data=b"{}")
    body = await response.read()
    assert body.endswith(b"data: [DONE]\n\n")
    assert len(response.headers["X-Request-ID"]) == 32
    (line,) = [r.getMessage() for r in caplog.records if r.name == "mlx_hub.access"]
    assert "prompt_tokens=2 completion_tokens=3" in line
    assert 'mlx_hub_completion_tokens_total{model="qwen"} 3.0' in metrics.exposition().decode()


async def test_hub_made_errors_carry_the_request_id_and_headers(served, caplog):
    client, metrics = served
    caplog.set_level(logging.INFO, logger="mlx_hub.access")
    response = await client.get("/fail", headers={"X-Request-ID": "rid-42"})
    assert response.status == 429
    assert response.headers["Retry-After"] == "3"
    error = (await response.json())["error"]
    assert error["request_id"] == "rid-42"
    assert error["type"] == "rate_limit_error" and error["code"] == "429"
    (line,) = [r.getMessage() for r in caplog.records if r.name == "mlx_hub.access"]
    assert "status=429" in line and "model=-" in line
    assert 'endpoint="/fail",model="",status="4xx"' in metrics.exposition().decode()
    # Outside a request no id is added.
    assert "request_id" not in error_body("x", 400)["error"]


async def test_unknown_routes_are_counted_under_one_label(served):
    client, metrics = served
    for path in ("/nope/1", "/nope/2"):
        assert (await client.get(path)).status == 404
    text = metrics.exposition().decode()
    assert 'endpoint="unmatched",model="",status="4xx"} 2.0' in text
