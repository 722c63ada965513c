"""The status page at /hub, driven in real headless Chromium against a real hub.

Every test starts `python -m mlx_openai_server_hub --config <hub.yaml> serve` (the
`hub_factory` fixture of tests/conftest.py) with fake workers, opens the page and
checks what a user sees and which requests each click sends.

Set MLX_HUB_UPDATE_SCREENSHOT=1 to rewrite docs/status-page.png.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from playwright.sync_api import Browser, Locator, Page, Request, expect

from tests.conftest import Hub, HubFactory, fake_model
from tests.support.hubs import cached_snapshots

from .conftest import PHONE, BrowserLauncher, PageFactory

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "docs" / "status-page.png"
TIME = r"\d{2}:\d{2}:\d{2}(?: [AP]M)?"
SIZE = r"\d+(?:\.\d)? (?:B|KB|MB|GB|TB)"  # as sizes.format_size writes it
GB = 2**30
SESSION_COOKIE = "mlx_hub_session"

# ------------------------------------------------------------------ helpers


class Reply:
    """A raw HTTP answer."""

    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.text = body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.text)


def raw_http(
    hub: Hub,
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> Reply:
    """One request to the hub on 127.0.0.1, with any headers (Host included); no redirects."""
    conn = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        conn.close()


def hub_status(hub: Hub) -> dict[str, Any]:
    """GET /hub/status with the token."""
    reply = raw_http(hub, "GET", "/hub/status", headers=hub.auth)
    assert reply.status == 200, reply.text
    return dict(reply.json())


def wait_model(
    hub: Hub, name: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30.0
) -> dict[str, Any]:
    """Poll /hub/status until the metadata of `name` satisfies `predicate`."""
    deadline = time.monotonic() + timeout
    while True:
        models = {m["id"]: m["metadata"] for m in hub_status(hub)["models"]}
        if predicate(models[name]):
            return dict(models[name])
        if time.monotonic() > deadline:
            pytest.fail(f"model {name} never reached the state; last {models[name]}")
        time.sleep(0.1)


def open_dashboard(open_page: PageFactory, hub: Hub, **kwargs: Any) -> Page:
    """Open /hub from this machine and wait for the first snapshot."""
    page = open_page(**kwargs)
    response = page.goto(f"{hub.url}/hub")
    assert response is not None and response.status == 200
    expect(page.locator("#models-body tr[data-model]").first).to_be_visible()
    return page


def record_posts(page: Page) -> list[Request]:
    """Every POST the page sends from now on."""
    posts: list[Request] = []
    page.on("request", lambda request: posts.append(request) if request.method == "POST" else None)
    return posts


def post_paths(posts: list[Request]) -> list[str]:
    """The URL paths of recorded POSTs."""
    return [urllib.parse.urlsplit(request.url).path for request in posts]


def row(page: Page, name: str) -> Locator:
    """The table row of model `name`."""
    return page.locator(f'#models-body tr[data-model="{name}"]')


def session_cookie(page: Page) -> dict[str, Any]:
    """The page's session cookie as the browser stores it."""
    cookies = [c for c in page.context.cookies() if c["name"] == SESSION_COOKIE]
    assert len(cookies) == 1, page.context.cookies()
    return dict(cookies[0])


# ----------------------------------------------------------------- fixtures

STATE_MODELS = [
    fake_model(
        "qwen3-30b",
        model_path="mlx-community/Qwen3-30B-A3B-4bit-DWQ",
        group="big",
        default=True,
        jit_enabled=True,
        auto_unload_minutes=30,
    ),
    fake_model(
        "gemma-4b",
        model_path="mlx-community/gemma-3-4b-it-4bit",
        model_type="multimodal",
        group="big",
        jit_enabled=True,
        auto_unload_minutes=30,
        env={"FAKE_START_DELAY": "2"},
    ),
    fake_model(
        "embed",
        model_path="mlx-community/all-MiniLM-L6-v2-4bit",
        model_type="embeddings",
        env={"FAKE_START_DELAY": "3"},
    ),
    fake_model(
        "whisper",
        model_path="mlx-community/whisper-large-v3-turbo",
        model_type="whisper",
        env={"FAKE_EXIT_AT_START": "1"},
    ),
]


@pytest.fixture
def state_hub(hub_factory: HubFactory, tmp_path: Path) -> Hub:
    """A hub with one model in each state: running+loaded, JIT unloaded, stopped, failed."""
    env = cached_snapshots(tmp_path / "hf-cache", [m["model_path"] for m in STATE_MODELS])
    hub = hub_factory(STATE_MODELS, env=env, groups=[{"name": "big", "max_loaded": 2}])
    wait_model(hub, "qwen3-30b", lambda m: m["process_state"] == "running")  # default: true
    for name, action, expected in (
        ("qwen3-30b", "load", 200),
        ("gemma-4b", "start", 200),  # JIT: started, not loaded
        ("whisper", "start", 503),  # its worker exits at start
    ):
        reply = raw_http(hub, "POST", f"/hub/models/{name}/{action}", headers=hub.auth)
        assert reply.status == expected, reply.text
    wait_model(hub, "whisper", lambda m: m["process_state"] == "failed")
    return hub


# -------------------------------------------------------------------- rows


def test_rows_show_each_state(state_hub: Hub, open_page: PageFactory, tmp_path: Path) -> None:
    """RUNNING • PID • PORT, JIT UNLOADED, STOPPED and FAILED • exit 1, with stats."""
    page = open_dashboard(open_page, state_hub)

    expect(page).to_have_title("MLX Hub Status · MLX OpenAI Server")
    expect(page.locator("h1")).to_have_text("MLX Hub Status • MLX OpenAI Server")
    expect(page.locator("#status-pill")).to_have_text("ok")
    expect(page.locator("#status-pill")).to_have_class("pill pill--ok")
    expect(page.locator("#started-counts")).to_have_text("2 / 4 started")
    expect(page.locator("#counts")).to_have_text("1 / 4 loaded")
    expect(page.locator("#updated-at")).to_have_text(re.compile(f"^{TIME}$"))
    expect(page.locator("#openai-url")).to_have_text(f"http://127.0.0.1:{state_hub.port}/v1")
    expect(page.locator("#warnings")).to_be_hidden()
    # No memory_budget: what the models use, against the machine's memory.
    expect(page.locator("#memory-text")).to_have_text(re.compile(f"^{SIZE} / {SIZE} system$"))
    headers = page.locator("thead th").all_text_contents()
    assert headers == [
        "Name", "Process", "Memory", "Auto-Unload", "Type", "Group", "Default", "Model",
        "Actions",
    ]  # fmt: skip

    loaded = row(page, "qwen3-30b")
    expect(loaded.locator(".cell-process")).to_have_text(
        re.compile(r"^RUNNING • PID \d+ • PORT \d+$")
    )
    expect(loaded.locator(".cell-memory")).to_have_text(
        re.compile(f"^LOADED • {SIZE} • {TIME}$")  # the worker's measured footprint
    )
    expect(loaded.locator(".cell-auto-unload")).to_have_text(
        re.compile(f"^30 min · unloads {TIME}$")
    )
    expect(loaded.locator(".cell-type")).to_have_text("lm")
    expect(loaded.locator(".cell-group")).to_have_text("big")
    expect(loaded.locator(".cell-default")).to_have_text("✅")
    expect(loaded.locator(".cell-path")).to_have_text("mlx-community/Qwen3-30B-A3B-4bit-DWQ")
    expect(loaded.locator(".action-group__label")).to_have_text(["Process", "Memory"])
    expect(loaded.locator("button")).to_have_text(["Stop", "Unload"])

    jit = row(page, "gemma-4b")
    expect(jit.locator(".cell-process")).to_have_text(re.compile(r"^RUNNING • PORT \d+$"))
    expect(jit.locator(".cell-memory")).to_have_text(re.compile("^UNLOADED"))
    expect(jit.locator(".cell-auto-unload")).to_have_text("30 min")
    expect(jit.locator(".cell-default")).to_have_text("—")
    expect(jit.locator("button")).to_have_text(["Stop", "Load"])

    stopped = row(page, "embed")
    expect(stopped.locator(".cell-process")).to_have_text("STOPPED")
    expect(stopped.locator(".cell-memory")).to_have_text("—")
    expect(stopped.locator(".cell-group")).to_have_text("—")
    expect(stopped.locator(".cell-default")).to_have_text("—")
    expect(stopped.locator(".cell-type")).to_have_text("embeddings")
    expect(stopped.locator(".action-group__label")).to_have_text(["Process"])
    expect(stopped.locator("button")).to_have_text(["Start"])

    failed = row(page, "whisper")
    expect(failed.locator(".cell-process")).to_have_text("FAILED • exit 1")
    expect(failed.locator(".cell-error")).to_have_text(re.compile("^Error: "))
    expect(failed.locator("button")).to_have_text(["Start"])
    expect(failed.locator("button")).to_be_enabled()

    update = os.environ.get("MLX_HUB_UPDATE_SCREENSHOT") == "1"
    page.screenshot(path=str(SCREENSHOT if update else tmp_path / "status-page.png"))


def test_phone_layout(state_hub: Hub, open_page: PageFactory) -> None:
    """On a phone the stat blocks stack and only the table scrolls sideways."""
    page = open_dashboard(open_page, state_hub, viewport=PHONE)
    tops = [box["y"] for box in (s.bounding_box() for s in page.locator(".stat").all()) if box]
    assert len(set(tops)) == 4, tops  # one block per line
    scroll = page.locator(".table-scroll")
    assert scroll.evaluate("el => el.scrollWidth > el.clientWidth")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    start = row(page, "embed").get_by_role("button", name="Start")
    start.scroll_into_view_if_needed()
    expect(start).to_be_in_viewport()


# ----------------------------------------------------------------- actions


def test_start_then_stop_send_one_request_each(state_hub: Hub, open_page: PageFactory) -> None:
    """Start: busy label, STARTING, then RUNNING; Stop: STOPPED; one POST per click."""
    page = open_dashboard(open_page, state_hub)
    posts = record_posts(page)
    model = row(page, "embed")
    process_button = model.locator('button[data-scope="process"]')

    process_button.click()
    expect(process_button).to_have_text("Starting…")
    expect(process_button).to_be_disabled()
    expect(page.locator("#toast")).to_have_text("start…")
    expect(page.locator("#toast")).to_have_class("toast toast--info")
    page.locator(".refresh-btn").click()  # a poll while the start is in flight
    starting = re.compile(r"^STARTING • (PID \d+ • )?PORT \d+$")
    expect(model.locator(".cell-process")).to_have_text(starting)
    expect(process_button).to_have_text("Starting…")

    expect(model.locator(".cell-process")).to_have_text(
        re.compile(r"^RUNNING • PID \d+ • PORT \d+$"), timeout=20_000
    )
    expect(page.locator("#toast")).to_have_text("Start process request sent for embed")
    expect(page.locator("#toast")).to_have_class("toast toast--success")
    expect(process_button).to_have_text("Stop")
    expect(process_button).to_be_enabled()
    expect(model.locator('button[data-scope="memory"]')).to_have_text("Unload")
    page.wait_for_timeout(300)
    assert post_paths(posts) == ["/hub/models/embed/start"]
    assert posts[0].headers["content-type"] == "application/json"
    assert posts[0].post_data_json == {"reason": "dashboard"}

    posts.clear()
    process_button.click()
    expect(model.locator(".cell-process")).to_have_text("STOPPED", timeout=20_000)
    expect(process_button).to_have_text("Start")
    expect(process_button).to_be_enabled()
    expect(model.locator('button[data-scope="memory"]')).to_have_count(0)
    expect(page.locator("#toast")).to_have_text("Stop process request sent for embed")
    page.wait_for_timeout(300)
    assert post_paths(posts) == ["/hub/models/embed/stop"]
    assert wait_model(state_hub, "embed", lambda m: True)["process_state"] == "stopped"


def test_load_then_unload_send_one_request_each(state_hub: Hub, open_page: PageFactory) -> None:
    """Load on a JIT model: `Loading…` disabled, then LOADED; Unload: UNLOADED again."""
    page = open_dashboard(open_page, state_hub)
    posts = record_posts(page)
    model = row(page, "gemma-4b")
    memory_button = model.locator('button[data-scope="memory"]')
    process_button = model.locator('button[data-scope="process"]')
    expect(memory_button).to_have_text("Load")

    memory_button.click()
    expect(memory_button).to_have_text("Loading…")
    expect(memory_button).to_be_disabled()
    expect(process_button).to_be_disabled()
    page.locator(".refresh-btn").click()
    # The share of its size in memory, the seconds so far, or (not sized yet) the time.
    expect(model.locator(".cell-memory")).to_have_text(
        re.compile(f"^LOADING (?:\\d+ %|\\d+ s|• {TIME})$")
    )
    expect(memory_button).to_have_text("Loading…")

    expect(model.locator(".cell-memory")).to_have_text(
        re.compile(f"^LOADED (?:• {SIZE} )?• {TIME}$"), timeout=20_000
    )
    expect(model.locator(".cell-process")).to_have_text(
        re.compile(r"^RUNNING • PID \d+ • PORT \d+$")
    )
    expect(model.locator(".cell-auto-unload")).to_have_text(
        re.compile(f"^30 min · unloads {TIME}$")
    )
    expect(memory_button).to_have_text("Unload")
    expect(memory_button).to_be_enabled()
    expect(page.locator("#toast")).to_have_text("Load memory request sent for gemma-4b")
    page.wait_for_timeout(300)
    assert post_paths(posts) == ["/hub/models/gemma-4b/load"]
    assert posts[0].post_data_json == {"reason": "dashboard"}

    posts.clear()
    memory_button.click()
    expect(model.locator(".cell-memory")).to_have_text(re.compile("^UNLOADED"), timeout=20_000)
    expect(model.locator(".cell-process")).to_have_text(re.compile(r"^RUNNING • PORT \d+$"))
    expect(model.locator(".cell-auto-unload")).to_have_text("30 min")
    expect(memory_button).to_have_text("Load")
    expect(memory_button).to_be_enabled()
    expect(page.locator("#toast")).to_have_text("Unload memory request sent for gemma-4b")
    page.wait_for_timeout(300)
    assert post_paths(posts) == ["/hub/models/gemma-4b/unload"]


def test_failed_action_shows_error_and_restores_label(
    state_hub: Hub, open_page: PageFactory
) -> None:
    """A start that fails: one POST, an error toast, and the Start button back."""
    page = open_dashboard(open_page, state_hub)
    posts = record_posts(page)
    model = row(page, "whisper")
    model.get_by_role("button", name="Start").click()
    expect(page.locator("#toast")).to_have_class("toast toast--error", timeout=20_000)
    expect(page.locator("#toast")).to_contain_text("whisper")
    expect(model.locator(".cell-process")).to_have_text("FAILED • exit 1")
    expect(model.locator("button")).to_have_text(["Start"])
    expect(model.locator("button")).to_be_enabled()
    page.wait_for_timeout(300)
    assert post_paths(posts) == ["/hub/models/whisper/start"]


def test_reload_sends_one_request(state_hub: Hub, open_page: PageFactory) -> None:
    """Reload: one POST without a body, a success flash, the label back, the new model shown."""
    page = open_dashboard(open_page, state_hub)
    posts = record_posts(page)
    document = yaml.safe_load(state_hub.config_path.read_text())
    document["models"].append(fake_model("added", model_path="mlx-community/added"))
    state_hub.config_path.write_text(yaml.safe_dump(document))

    reload_button = page.locator('[data-service-action="reload"]')
    reload_button.dblclick()  # even a double click sends one request
    flash = page.locator("#flash-banner")
    expect(flash).to_have_text("Hub configuration reloaded")
    expect(flash).to_have_class("flash flash--success")
    expect(reload_button).to_have_text("Reload")
    expect(reload_button).to_be_enabled()
    expect(row(page, "added").locator(".cell-process")).to_have_text("STOPPED")
    expect(page.locator("#started-counts")).to_have_text("2 / 5 started")
    page.wait_for_timeout(300)
    assert post_paths(posts) == ["/hub/service/reload"]
    assert posts[0].post_data is None


def test_stop_service_ends_hub(state_hub: Hub, open_page: PageFactory) -> None:
    """Stop: one POST, a warning flash; the hub exits and the page shows its error banner."""
    page = open_dashboard(open_page, state_hub)
    posts = record_posts(page)
    page.locator('[data-service-action="stop"]').click()
    flash = page.locator("#flash-banner")
    expect(flash).to_have_class("flash flash--warn")
    expect(flash).to_contain_text("stop requested")
    assert state_hub.proc is not None
    state_hub.proc.wait(timeout=60)
    expect(page.locator("#error-banner")).to_be_visible(timeout=15_000)
    expect(page.locator("#error-banner")).not_to_be_empty()
    expect(page.locator("#status-pill")).to_have_text("error")
    expect(page.locator("#status-pill")).to_have_class("pill pill--error")
    expect(page.locator('[data-service-action="stop"]')).to_have_text("Stop")
    assert post_paths(posts) == ["/hub/service/stop"]


# ---------------------------------------------------------------- security


def test_local_visit_gets_cookie_and_no_token(state_hub: Hub, open_page: PageFactory) -> None:
    """The page sets an HttpOnly SameSite=Strict cookie and never contains the token."""
    page = open_dashboard(open_page, state_hub)
    cookie = session_cookie(page)
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert state_hub.token not in page.content()
    script = raw_http(state_hub, "GET", "/hub/static/hub.js")
    assert script.status == 200 and state_hub.token not in script.text
    assert raw_http(state_hub, "GET", "/hub/static/hub.css").status == 200


def test_cookie_post_needs_same_origin(state_hub: Hub, open_page: PageFactory) -> None:
    """A POST riding on the session cookie from another origin is refused (403)."""
    page = open_dashboard(open_page, state_hub)
    cookie = f"{SESSION_COOKIE}={session_cookie(page)['value']}"
    body = json.dumps({"reason": "dashboard"}).encode()
    base = {"Cookie": cookie, "Content-Type": "application/json"}

    foreign = raw_http(
        state_hub, "POST", "/hub/models/x/start", body=body,
        headers={**base, "Origin": "http://evil.example"},
    )  # fmt: skip
    assert foreign.status == 403, foreign.text
    no_origin = raw_http(state_hub, "POST", "/hub/models/x/start", body=body, headers=base)
    assert no_origin.status == 403, no_origin.text
    own = raw_http(
        state_hub, "POST", "/hub/models/x/start", body=body,
        headers={**base, "Origin": state_hub.url},
    )  # fmt: skip
    assert own.status == 404, own.text  # let through; the model does not exist
    assert raw_http(state_hub, "GET", "/hub/status", headers={"Cookie": cookie}).status == 200


def test_unknown_host_is_refused(state_hub: Hub) -> None:
    """A request naming a host that is not this machine (DNS rebinding) gets 403."""
    evil = {"Host": f"evil.example:{state_hub.port}"}
    assert raw_http(state_hub, "GET", "/hub", headers=evil).status == 403
    with_token = {**evil, **state_hub.auth}
    assert raw_http(state_hub, "GET", "/hub/status", headers=with_token).status == 403


def test_remote_visitor_logs_in_with_the_token(state_hub: Hub) -> None:
    """Loopback peer but a non-loopback Host: login form (401) until the token is given."""
    remote = {"Host": f"{socket.gethostname().lower()}:{state_hub.port}"}
    form = raw_http(state_hub, "GET", "/hub", headers=remote)
    assert form.status == 401
    assert form.headers["Content-Type"].startswith("text/html")
    assert 'name="token"' in form.text and 'action="/hub/login"' in form.text
    assert "Set-Cookie" not in form.headers
    assert state_hub.token not in form.text
    assert "models-body" not in form.text

    encoded = {**remote, "Content-Type": "application/x-www-form-urlencoded"}
    wrong = raw_http(state_hub, "POST", "/hub/login", headers=encoded, body=b"token=nope")
    assert wrong.status == 401
    assert 'id="login-error"' in wrong.text and "Set-Cookie" not in wrong.headers

    right_body = urllib.parse.urlencode({"token": state_hub.token}).encode()
    right = raw_http(state_hub, "POST", "/hub/login", headers=encoded, body=right_body)
    assert right.status == 303 and right.headers["Location"] == "/hub"
    set_cookie = right.headers["Set-Cookie"]
    assert set_cookie.startswith(f"{SESSION_COOKIE}=")
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
    cookie = set_cookie.split(";", 1)[0]

    page = raw_http(state_hub, "GET", "/hub", headers={**remote, "Cookie": cookie})
    assert page.status == 200 and 'id="models-body"' in page.text
    assert state_hub.token not in page.text

    link = f"/hub/login?token={urllib.parse.quote(state_hub.token)}"
    by_link = raw_http(state_hub, "GET", link, headers=remote)
    assert by_link.status == 303 and by_link.headers["Location"] == "/hub"
    assert "HttpOnly" in by_link.headers["Set-Cookie"]
    bad_link = raw_http(state_hub, "GET", "/hub/login?token=nope", headers=remote)
    assert bad_link.status == 401 and 'id="login-error"' in bad_link.text


def test_remote_browser_login_flow(
    state_hub: Hub, open_page: PageFactory, launch_chromium: BrowserLauncher
) -> None:
    """In a browser that reaches the hub by the machine's name: form, token, page, actions."""
    name = socket.gethostname().lower()
    browser: Browser = launch_chromium(f"--host-resolver-rules=MAP {name} 127.0.0.1")
    page = open_page(browser=browser)
    response = page.goto(f"http://{name}:{state_hub.port}/hub")
    assert response is not None and response.status == 401
    expect(page.locator("#login-form")).to_be_visible()
    page.locator("#token").fill("wrong-token")
    page.locator("#login-form button[type=submit]").click()
    expect(page.locator("#login-error")).to_be_visible()

    page.locator("#token").fill(state_hub.token)
    page.locator("#login-form button[type=submit]").click()
    expect(page).to_have_url(f"http://{name}:{state_hub.port}/hub")
    expect(row(page, "qwen3-30b")).to_be_visible()
    assert state_hub.token not in page.content()
    expect(page.locator("#openai-url")).to_have_text(f"http://127.0.0.1:{state_hub.port}/v1")

    posts = record_posts(page)
    page.locator('[data-service-action="reload"]').click()
    expect(page.locator("#flash-banner")).to_have_text("Hub configuration reloaded")
    assert post_paths(posts) == ["/hub/service/reload"]


# ------------------------------------------------------------------ memory


def test_memory_sizes_budget_bar_and_load_progress(
    hub_factory: HubFactory, open_page: PageFactory
) -> None:
    """A loaded model's size, "used / budget" in the header, a slow load's percent."""
    hub = hub_factory(
        [
            fake_model("alpha", default=True, memory="400MB"),
            fake_model("slow", default=True, memory="400MB", env={"FAKE_START_DELAY": "60"}),
        ],
        memory_budget="1GB",
    )
    wait_model(hub, "alpha", lambda m: m["memory_state"] == "loaded" and m["memory_bytes"])
    wait_model(hub, "slow", lambda m: m["load_progress"] is not None)
    page = open_dashboard(open_page, hub)

    memory = row(page, "alpha").locator(".cell-memory")
    expect(memory).to_have_text(re.compile(f"^LOADED • {SIZE} • {TIME}$"))
    expect(row(page, "alpha").locator(".progress")).to_have_count(0)

    loading = row(page, "slow").locator(".cell-memory")
    expect(loading).to_have_text(re.compile(r"^LOADING \d+ %$"))
    # One read of both (a poll may redraw the row): the bar shows the percent of the text.
    text, value = loading.evaluate(
        "td => [td.textContent, td.querySelector('[role=progressbar]').ariaValueNow]"
    )
    assert text == f"LOADING {value} %"
    # The buttons are as before: busy while the model starts and loads.
    expect(row(page, "slow").locator("button")).to_have_text(["Starting…", "Loading…"])

    expect(page.locator("#memory-summary")).to_be_visible()
    expect(page.locator("#memory-text")).to_have_text(re.compile(f"^{SIZE} / 1.0 GB budget$"))
    used = hub_status(hub)["memory"]["used_bytes"]
    assert 0 < used <= GB
    expect(page.locator("#memory-bar")).to_have_attribute("aria-valuenow", re.compile(r"^\d+$"))


def _with_models(snapshot: dict[str, Any], extra: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """`snapshot` with copies of its first model under other names, metadata overridden."""
    base = snapshot["models"][0]
    for name, meta in extra.items():
        snapshot["models"].append({**base, "id": name, "metadata": {**base["metadata"], **meta}})
    return snapshot


def test_download_and_unsized_load_and_queue_render(
    hub_factory: HubFactory, open_page: PageFactory
) -> None:
    """States a fake worker cannot hold still, from a doctored /hub/status: a download
    with its percent and sizes, a load of unknown size, queued requests, a warm
    standby, no budget."""
    hub = hub_factory([fake_model("alpha", default=True)])
    wait_model(hub, "alpha", lambda m: m["memory_state"] == "loaded")
    download = {
        "state": "downloading",
        "bytes_done": int(6.1 * GB),
        "bytes_total": int(14.2 * GB),
        "files_done": 1,
        "files_total": 3,
        "rate_bytes_per_s": 50_000_000,
        "eta_s": 170,
        "error": None,
        "error_kind": None,
        "files": [],
    }
    extra = {
        "dl": {"memory_state": "loading", "download": download},
        "queued": {"download": {**download, "state": "queued"}},
        "ld": {"memory_state": "loading", "load_progress": None, "load_elapsed_s": 12.4},
        "busy": {"memory_bytes": int(4.2 * GB), "queued_requests": 3},
        "broken": {
            "download": {**download, "state": "failed", "error": "HTTP 404"},
            "memory_state": "unloaded",
        },
        "warm": {
            "memory_state": "unloaded",
            "standby": {"pid": 4242, "since": 1796280858.0, "memory_bytes": 700 * 2**20},
        },
    }
    memory = {"budget_bytes": None, "used_bytes": int(4.2 * GB), "system_total_bytes": 16 * GB}

    def doctor(route: Any) -> None:
        reply = route.fetch()
        snapshot = _with_models(reply.json(), extra)
        snapshot["memory"] = {**snapshot["memory"], **memory}
        route.fulfill(response=reply, json=snapshot)

    page = open_page()
    page.route("**/hub/status", doctor)
    page.goto(f"{hub.url}/hub")

    cell = row(page, "dl").locator(".cell-memory")
    expect(cell).to_have_text("DOWNLOADING 42 % • 6.1/14.2 GB")
    expect(cell.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "42")
    expect(row(page, "queued").locator(".cell-memory")).to_have_text("DOWNLOAD QUEUED")
    loading = row(page, "ld").locator(".cell-memory")
    expect(loading).to_have_text("LOADING 12 s")
    expect(loading.locator(".progress--indeterminate")).to_have_count(1)
    assert not loading.get_by_role("progressbar").evaluate("el => el.hasAttribute('aria-valuenow')")
    expect(row(page, "busy").locator(".cell-memory")).to_have_text(
        re.compile(f"^LOADED • 4.2 GB • {TIME} • 3 queued$")
    )
    expect(row(page, "warm").locator(".cell-memory")).to_have_text(
        re.compile(f"^UNLOADED • standby • {TIME}$")
    )
    expect(row(page, "broken").locator(".cell-error")).to_have_text(
        "Error: download failed: HTTP 404"
    )
    expect(page.locator("#memory-text")).to_have_text("4.2 GB / 16.0 GB system")
    expect(page.locator("#memory-bar")).to_have_attribute("aria-valuenow", "26")
    headers = page.locator("thead th").all_text_contents()
    assert len(headers) == 9  # no new columns


def test_status_page_can_be_disabled(hub_factory: HubFactory) -> None:
    """`enable_status_page: false`: /hub and /hub/login answer 404 with the error envelope."""
    hub = hub_factory([fake_model("alpha")], enable_status_page=False)
    for path in ("/hub", "/hub/login"):
        reply = raw_http(hub, "GET", path)
        assert reply.status == 404, reply.text
        error = reply.json()["error"]
        assert error["message"] == "Hub status page is disabled in configuration."
        assert error["code"] == "404"
