"""Traffic shaping and visibility with fake workers: the per-model request queue,
`/v1/queue/stats`, request ids, the access log in hub.log and `/metrics`."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import TEST_TOKEN, Hub, HubFactory, fake_model

CHAT = "/v1/chat/completions"
PROMPT = "one two three"  # 3 prompt tokens for the fake worker (it splits on spaces)
ACCESS_FIELDS = [
    "id",
    "client",
    "method",
    "path",
    "model",
    "status",
    "queue_wait",
    "ttfb",
    "total",
    "bytes",
    "prompt_tokens",
    "completion_tokens",
]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def chat(model: str, prompt: str = PROMPT, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": prompt}], **extra}


async def send(
    http: aiohttp.ClientSession, hub: Hub, payload: dict[str, Any], **kwargs: Any
) -> tuple[int, Any, Any]:
    """POST a chat request: (status, response headers, parsed JSON body)."""
    async with http.post(hub.url + CHAT, json=payload, **kwargs) as resp:
        return resp.status, resp.headers, await resp.json(content_type=None)


def worker_sequence(body: dict[str, Any]) -> int:
    """The fake worker numbers the answers it builds: `chatcmpl-fake-<pid>-<n>`."""
    return int(body["id"].rsplit("-", 1)[1])


async def loaded_hub(hub_factory: HubFactory, http: aiohttp.ClientSession, **model: Any) -> Hub:
    """A hub with one default model `m` served by the fake worker, loaded."""
    hub = hub_factory([fake_model("m", default=True, **model)])
    await hub.wait_for("m", lambda m: m["memory_state"] == "loaded", session=http)
    return hub


def counts(active: int, queued: int) -> Callable[[dict[str, Any]], bool]:
    """A `wait_for` predicate on a model's queue counts."""
    return lambda m: (m["active_requests"], m["queued_requests"]) == (active, queued)


async def eventually(probe: Callable[[], Awaitable[Any]], check: Callable[[Any], bool]) -> Any:
    """Call `probe` until `check` holds on its result (3 s); return that result.

    The access log line and the request counters are written just after the
    response's last byte, so a client can look a moment before they exist.
    """
    deadline = time.monotonic() + 3.0
    while True:
        value = await probe()
        if check(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)


async def access_lines(hub: Hub) -> dict[str, dict[str, str]]:
    """Every access-log line of hub.log as its fields, by request id."""
    text = (hub.log_path / "hub.log").read_text(errors="replace")
    lines = {}
    for match in re.finditer(r"access (id=.*)$", text, re.MULTILINE):
        fields = dict(pair.split("=", 1) for pair in match.group(1).split(" "))
        lines[fields["id"]] = fields
    return lines


async def access_line(hub: Hub, request_id: str) -> dict[str, str]:
    """The fields of the access-log line of one request (fails if it never appears)."""
    lines = await eventually(lambda: access_lines(hub), lambda found: request_id in found)
    assert request_id in lines, (hub.log_path / "hub.log").read_text()
    return lines[request_id]


async def scrape(http: aiohttp.ClientSession, hub: Hub) -> Samples:
    """GET /metrics with the token, parsed: value by (sample name, sorted labels)."""
    async with http.get(hub.url + "/metrics", headers=hub.auth) as resp:
        assert resp.status == 200, await resp.text()
        text = await resp.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 for a series not exposed yet)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def requests_of(samples: Samples, model: str, status: str) -> float:
    return value(samples, "mlx_hub_requests_total", model=model, endpoint=CHAT, status=status)


# ------------------------------------------------------------------ the queue


async def test_queued_requests_reach_the_worker_in_arrival_order(
    hub_factory: HubFactory, http: aiohttp.ClientSession
):
    hub = await loaded_hub(hub_factory, http, max_concurrency=1)
    tasks = []
    for index in range(5):
        tasks.append(asyncio.create_task(send(http, hub, chat("m", fake_delay=0.5))))
        # Each one arrives only once the previous one is in (serving or queued).
        await hub.wait_for("m", counts(1, index), session=http)
    results = await asyncio.gather(*tasks)
    assert [status for status, _, _ in results] == [200] * 5
    assert [worker_sequence(body) for _, _, body in results] == [1, 2, 3, 4, 5]


async def test_a_full_queue_answers_429_with_retry_after(
    hub_factory: HubFactory, http: aiohttp.ClientSession
):
    hub = await loaded_hub(hub_factory, http, max_concurrency=1, queue_size=1)
    busy = asyncio.create_task(send(http, hub, chat("m", fake_delay=1.5)))
    await hub.wait_for("m", counts(1, 0), session=http)
    waiting = asyncio.create_task(send(http, hub, chat("m")))
    await hub.wait_for("m", counts(1, 1), session=http)

    status, headers, body = await send(http, hub, chat("m"))
    assert status == 429
    assert 1 <= int(headers["Retry-After"]) <= 60
    error = body["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "429"
    assert "'m'" in error["message"] and "queue" in error["message"]
    assert "queue_size 1" in error["message"]
    assert error["request_id"] == headers["X-Request-ID"]
    assert [(await task)[0] for task in (busy, waiting)] == [200, 200]


async def test_a_request_waiting_longer_than_queue_timeout_gets_503(
    hub_factory: HubFactory, http: aiohttp.ClientSession
):
    hub = await loaded_hub(hub_factory, http, max_concurrency=1, queue_timeout=1)
    busy = asyncio.create_task(send(http, hub, chat("m", fake_delay=2.5)))
    await hub.wait_for("m", counts(1, 0), session=http)
    started = time.monotonic()
    status, _, body = await send(http, hub, chat("m"))
    waited = time.monotonic() - started
    assert status == 503
    assert body["error"]["type"] == "service_unavailable"
    assert "'m'" in body["error"]["message"] and "queue_timeout" in body["error"]["message"]
    assert 0.9 <= waited < 2.5  # busy ends at 2.5 s: the wait ended on its own
    assert (await busy)[0] == 200


async def test_a_client_that_hangs_up_while_queued_leaves_the_queue_at_once(
    hub_factory: HubFactory, http: aiohttp.ClientSession
):
    hub = await loaded_hub(hub_factory, http, max_concurrency=1)
    busy = asyncio.create_task(send(http, hub, chat("m", fake_delay=2.5)))
    await hub.wait_for("m", counts(1, 0), session=http)
    async with aiohttp.ClientSession() as quitter:
        queued = asyncio.create_task(
            send(quitter, hub, chat("m"), headers={"X-Request-ID": "quitter"})
        )
        await hub.wait_for("m", counts(1, 1), session=http)
        queued.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await queued
    hung_up = time.monotonic()
    await hub.wait_for("m", counts(1, 0), timeout=1.0, session=http)
    assert time.monotonic() - hung_up < 1.0
    assert (await busy)[0] == 200
    # The abandoned request never reached the worker: the next answer is its second.
    status, _, body = await send(http, hub, chat("m"))
    assert status == 200 and worker_sequence(body) == 2
    assert (await access_line(hub, "quitter"))["status"] == "499"


async def test_a_stream_holds_its_slot_until_its_last_byte(
    hub_factory: HubFactory, http: aiohttp.ClientSession
):
    hub = await loaded_hub(hub_factory, http, max_concurrency=1)
    stream = chat("m", stream=True, fake_chunks=8, fake_chunk_delay=0.2)
    async with http.post(hub.url + CHAT, json=stream) as resp:
        assert resp.status == 200
        assert (await resp.content.readline()).startswith(b"data: ")  # content chunk 0
        other = asyncio.create_task(send(http, hub, chat("m")))
        await hub.wait_for("m", counts(1, 1), session=http)
        events = 0
        async for line in resp.content:
            if line.startswith(b"data: [DONE]"):
                break
            events += line.startswith(b"data: ")
            assert not other.done(), "a request was served while the stream held the slot"
    assert events == 8  # content chunks 1..7 and the finish chunk
    status, _, _ = await asyncio.wait_for(other, 2.0)
    assert status == 200


async def test_a_request_waiting_for_a_jit_load_counts_as_queued(
    hub_factory: HubFactory, http: aiohttp.ClientSession
):
    model = fake_model("jit", jit_enabled=True, default=True, env={"FAKE_START_DELAY": "1.5"})
    hub = hub_factory([model])
    await hub.wait_for("jit", lambda m: m["process_state"] == "running", session=http)
    waiting = asyncio.create_task(send(http, hub, chat("jit"), headers={"X-Request-ID": "jit-1"}))
    meta = await hub.wait_for("jit", lambda m: m["memory_state"] == "loading", session=http)
    assert (meta["active_requests"], meta["queued_requests"]) == (0, 1)
    assert (await waiting)[0] == 200
    assert float((await access_line(hub, "jit-1"))["queue_wait"]) >= 1.0


async def test_queue_stats_come_from_the_hub_queue_and_the_loaded_worker(
    hub_factory: HubFactory, http: aiohttp.ClientSession
):
    models = [
        fake_model("m", default=True, max_concurrency=1, queue_size=5, queue_timeout=30),
        fake_model("idle", jit_enabled=True, default=True),
    ]
    hub = hub_factory(models)
    await hub.wait_for("m", lambda m: m["memory_state"] == "loaded", session=http)
    tasks = [asyncio.create_task(send(http, hub, chat("m", fake_delay=1.5)))]
    await hub.wait_for("m", counts(1, 0), session=http)
    tasks += [asyncio.create_task(send(http, hub, chat("m"))) for _ in range(2)]
    await hub.wait_for("m", counts(1, 2), session=http)

    async with http.get(hub.url + "/v1/queue/stats", params={"model": "m"}) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["model"] == "m"
    stats = body["queue_stats"]
    assert {k: stats[k] for k in ("active_requests", "queued_requests")} == {
        "active_requests": 1,
        "queued_requests": 2,
    }
    assert (stats["max_concurrency"], stats["queue_size"], stats["queue_timeout"]) == (1, 5, 30)
    assert body["worker"]["queue_stats"]["running"] == 1  # the worker sees only one
    assert [(await task)[0] for task in tasks] == [200] * 3

    await hub.wait_for("idle", lambda m: m["process_state"] == "running", session=http)
    async with http.get(hub.url + "/v1/queue/stats", params={"model": "idle"}) as resp:
        body = await resp.json()
    stats = body["queue_stats"]
    assert (stats["active_requests"], stats["queued_requests"]) == (0, 0)
    assert (stats["max_concurrency"], stats["queue_size"], stats["queue_timeout"]) == (
        None,
        100,
        300,
    )
    assert "worker" not in body  # not loaded, and not loaded for this
    assert (await hub.model("idle", http))["memory_state"] == "unloaded"


# -------------------------------------------------------- request ids, access log


async def test_a_client_request_id_goes_to_the_worker_and_comes_back(
    hub_factory: HubFactory, http: aiohttp.ClientSession
):
    hub = await loaded_hub(hub_factory, http)
    status, headers, _ = await send(http, hub, chat("m"), headers={"X-Request-ID": "trace-42"})
    assert status == 200
    assert headers["X-Request-ID"] == "trace-42"
    assert headers["x-fake-worker-request-id"] == "trace-42"


@pytest.mark.parametrize("sent", ["x" * 129, "tab\there", "caf\u00e9"], ids=["long", "tab", "utf8"])
async def test_an_unfit_request_id_is_replaced_everywhere(
    hub_factory: HubFactory, http: aiohttp.ClientSession, sent: str
):
    hub = await loaded_hub(hub_factory, http)
    status, headers, _ = await send(http, hub, chat("m"), headers={"X-Request-ID": sent})
    assert status == 200
    new_id = headers["X-Request-ID"]
    assert new_id != sent and re.fullmatch(r"[ -~]{1,128}", new_id)
    assert headers["x-fake-worker-request-id"] == new_id
    # A request without an id gets a fresh one, never the same twice.
    _, again, _ = await send(http, hub, chat("m"))
    assert again["X-Request-ID"] not in (new_id, "")
    assert again["x-fake-worker-request-id"] == again["X-Request-ID"]


async def test_a_hub_made_error_names_the_request_id(
    hub_factory: HubFactory, http: aiohttp.ClientSession
):
    hub = await loaded_hub(hub_factory, http)
    status, headers, body = await send(http, hub, chat("nope"), headers={"X-Request-ID": "err-7"})
    assert status == 404
    assert headers["X-Request-ID"] == "err-7" and body["error"]["request_id"] == "err-7"


async def test_every_answer_carries_x_process_time(
    hub_factory: HubFactory, http: aiohttp.ClientSession
):
    hub = await loaded_hub(hub_factory, http)
    started = time.monotonic()
    _, headers, _ = await send(http, hub, chat("m", fake_delay=0.3))
    elapsed = time.monotonic() - started
    assert 0.3 <= float(headers["X-Process-Time"]) <= elapsed
    async with http.get(hub.url + "/hub/status", headers=hub.auth) as resp:
        assert float(resp.headers["X-Process-Time"]) >= 0
    async with http.get(hub.url + "/hub/status") as resp:  # a refusal too
        assert resp.status == 401 and float(resp.headers["X-Process-Time"]) >= 0


async def test_one_access_log_line_per_request_without_secrets(
    hub_factory: HubFactory, http: aiohttp.ClientSession
):
    api_key = "sk-access-log-secret-0123"
    prompt = "PROMPT-NEVER-LOGGED alpha beta"
    hub = hub_factory([fake_model("m", default=True)], api_keys=[api_key])
    await hub.wait_for("m", lambda m: m["memory_state"] == "loaded", session=http)
    headers = {"Authorization": f"Bearer {api_key}", "X-Request-ID": "log-1"}
    async with http.post(hub.url + CHAT, json=chat("m", prompt), headers=headers) as resp:
        assert resp.status == 200
        body = await resp.read()
    async with http.get(hub.url + "/hub/status", headers={**hub.auth, "X-Request-ID": "log-2"}):
        pass
    async with http.get(
        hub.url + f"/hub/login?token={TEST_TOKEN}",
        headers={"X-Request-ID": "log-3"},
        allow_redirects=False,
    ):
        pass

    line = await access_line(hub, "log-1")
    assert list(line) == ACCESS_FIELDS
    assert line["client"] == "127.0.0.1" and line["method"] == "POST"
    assert line["path"] == CHAT and line["model"] == "m" and line["status"] == "200"
    queue_wait, ttfb, total = (float(line[k]) for k in ("queue_wait", "ttfb", "total"))
    assert 0 <= queue_wait <= ttfb <= total
    assert len(body) < int(line["bytes"]) < len(body) + 2048  # the headers count too
    assert (line["prompt_tokens"], line["completion_tokens"]) == ("3", "3")
    assert (await access_line(hub, "log-2"))["path"] == "/hub/status"
    assert (await access_line(hub, "log-3"))["path"] == "/hub/login"
    log = (hub.log_path / "hub.log").read_text()
    for secret in (api_key, TEST_TOKEN, "PROMPT-NEVER-LOGGED", "alpha beta"):
        assert secret not in log


async def test_queue_refusals_are_logged_and_counted_under_their_model(
    hub_factory: HubFactory, http: aiohttp.ClientSession
):
    hub = await loaded_hub(hub_factory, http, max_concurrency=1, queue_size=1)
    busy = asyncio.create_task(send(http, hub, chat("m", fake_delay=1.0)))
    await hub.wait_for("m", counts(1, 0), session=http)
    waiting = asyncio.create_task(send(http, hub, chat("m")))
    await hub.wait_for("m", counts(1, 1), session=http)
    status, _, _ = await send(http, hub, chat("m"), headers={"X-Request-ID": "refused"})
    assert status == 429
    await asyncio.gather(busy, waiting)
    line = await access_line(hub, "refused")
    assert (line["status"], line["model"]) == ("429", "m")
    samples = await scrape(http, hub)
    assert requests_of(samples, "m", "4xx") == 1


# ------------------------------------------------------------------- /metrics


async def test_metrics_need_the_control_token(hub_factory: HubFactory, http: aiohttp.ClientSession):
    hub = hub_factory([fake_model("m")])
    async with http.get(hub.url + "/metrics") as resp:
        assert resp.status == 401
        assert (await resp.json())["error"]["type"] == "authentication_error"
    async with http.get(hub.url + "/metrics", headers={"Authorization": "Bearer wrong"}) as resp:
        assert resp.status == 401
    async with http.get(hub.url + "/metrics", headers=hub.auth) as resp:
        assert resp.status == 200 and resp.content_type == "text/plain"
        assert "mlx_hub_requests" in await resp.text()


async def test_metrics_public_opens_metrics_and_nothing_else(
    hub_factory: HubFactory, http: aiohttp.ClientSession
):
    hub = hub_factory([fake_model("m")], metrics_public=True)
    async with http.get(hub.url + "/metrics") as resp:
        assert resp.status == 200
        families = {f.name for f in text_string_to_metric_families(await resp.text())}
    assert {"mlx_hub_requests", "process_cpu_seconds"} <= families
    async with http.get(hub.url + "/hub/status") as resp:
        assert resp.status == 401


async def test_metrics_count_requests_loads_evictions_crashes_and_failed_loads(
    hub_factory: HubFactory, http: aiohttp.ClientSession
):
    models = [
        fake_model("a", jit_enabled=True, default=True, group="g"),
        fake_model("b", jit_enabled=True, default=True, group="g"),
        fake_model("c", jit_enabled=True, default=True, env={"FAKE_EXIT_AT_START": "1"}),
    ]
    hub = hub_factory(models, groups=[{"name": "g", "max_loaded": 1}])
    for name in "abc":
        await hub.wait_for(name, lambda m: m["process_state"] == "running", session=http)
    sequence = [
        (chat("a"), 200),
        (chat("a"), 200),
        (chat("a", fake_delay="soon"), 400),  # the worker refuses the knob
        (chat("b"), 200),  # evicts a
        (chat("a"), 200),  # evicts b, loads a again
        (chat("c"), 503),  # its worker exits at start
        (chat("a", fake_crash=True), 502),  # a's worker dies
    ]
    for payload, expected in sequence:
        assert (await send(http, hub, payload))[0] == expected, payload
    await hub.wait_for("a", lambda m: m["memory_state"] == "unloaded", session=http)

    samples = await eventually(lambda: scrape(http, hub), lambda s: requests_of(s, "a", "5xx") == 1)
    assert [requests_of(samples, "a", cls) for cls in ("2xx", "4xx", "5xx")] == [3, 1, 1]
    assert requests_of(samples, "b", "2xx") == 1
    duration = value(samples, "mlx_hub_request_duration_seconds_count", model="a", endpoint=CHAT)
    assert duration == 5

    def per_model(name: str) -> dict[str, float]:
        return {m: value(samples, f"mlx_hub_model_{name}_total", model=m) for m in "abc"}

    assert per_model("loads") == {"a": 2, "b": 1, "c": 0}
    assert per_model("evictions") == {"a": 1, "b": 1, "c": 0}
    assert per_model("unloads") == {"a": 1, "b": 1, "c": 0}
    assert per_model("crashes") == {"a": 1, "b": 0, "c": 0}
    assert per_model("failed_loads") == {"a": 0, "b": 0, "c": 1}
    assert value(samples, "mlx_hub_model_load_duration_seconds_count", model="a") == 2
    assert value(samples, "mlx_hub_requests_in_flight", model="a") == 0
    assert value(samples, "mlx_hub_model_memory_state", model="a", state="unloaded") == 1
    assert value(samples, "mlx_hub_model_memory_state", model="b", state="unloaded") == 1


async def test_metrics_show_the_queue_while_requests_wait(
    hub_factory: HubFactory, http: aiohttp.ClientSession
):
    hub = await loaded_hub(hub_factory, http, max_concurrency=1)
    tasks = [asyncio.create_task(send(http, hub, chat("m", fake_delay=1.0)))]
    await hub.wait_for("m", counts(1, 0), session=http)
    tasks += [asyncio.create_task(send(http, hub, chat("m"))) for _ in range(2)]
    await hub.wait_for("m", counts(1, 2), session=http)
    samples = await scrape(http, hub)
    assert value(samples, "mlx_hub_requests_in_flight", model="m") == 1
    assert value(samples, "mlx_hub_requests_queued", model="m") == 2
    await asyncio.gather(*tasks)
    samples = await eventually(lambda: scrape(http, hub), lambda s: requests_of(s, "m", "2xx") == 3)
    assert value(samples, "mlx_hub_queue_wait_seconds_count", model="m") == 3
    assert value(samples, "mlx_hub_queue_wait_seconds_sum", model="m") >= 1.5  # 1 s + 1 s


async def test_token_counts_from_a_json_answer(
    hub_factory: HubFactory, http: aiohttp.ClientSession
):
    hub = await loaded_hub(hub_factory, http)
    for _ in range(2):
        status, _, body = await send(http, hub, chat("m"))
        assert status == 200 and body["usage"]["prompt_tokens"] == 3
    completion = body["usage"]["completion_tokens"]
    samples = await eventually(
        lambda: scrape(http, hub),
        lambda s: value(s, "mlx_hub_prompt_tokens_total", model="m") == 6,
    )
    assert value(samples, "mlx_hub_prompt_tokens_total", model="m") == 6
    assert value(samples, "mlx_hub_completion_tokens_total", model="m") == 2 * completion


async def test_token_counts_from_the_final_usage_chunk_of_a_stream(
    hub_factory: HubFactory, http: aiohttp.ClientSession
):
    hub = await loaded_hub(hub_factory, http)
    with_usage = chat("m", stream=True, fake_chunks=4, stream_options={"include_usage": True})
    without = chat("m", stream=True, fake_chunks=4)
    for request_id, payload in (("with-usage", with_usage), ("without-usage", without)):
        headers = {"X-Request-ID": request_id}
        async with http.post(hub.url + CHAT, json=payload, headers=headers) as resp:
            text = await resp.text()
        assert resp.status == 200 and text.rstrip().endswith("data: [DONE]")
    line = await access_line(hub, "with-usage")
    assert (line["prompt_tokens"], line["completion_tokens"]) == ("3", "4")
    line = await access_line(hub, "without-usage")
    assert (line["prompt_tokens"], line["completion_tokens"]) == ("-", "-")
    samples = await scrape(http, hub)
    assert value(samples, "mlx_hub_prompt_tokens_total", model="m") == 3
    assert value(samples, "mlx_hub_completion_tokens_total", model="m") == 4
