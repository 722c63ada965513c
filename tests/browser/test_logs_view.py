"""The live log view (/hub/logs/view) in headless Chromium, opened from the status page."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.conftest import HubFactory, fake_model

from .conftest import PageFactory
from .test_dashboard import open_dashboard, row

pytestmark = pytest.mark.browser


def test_logs_link_opens_a_live_view(hub_factory: HubFactory, open_page: PageFactory) -> None:
    """The row's Logs link opens the view; a line written later shows without reload."""
    hub = hub_factory([fake_model("alpha"), fake_model("quiet", no_log_file=True)])
    log = hub.log_path / "alpha.log"
    log.write_text("first line\nsecond line\n")
    page = open_dashboard(open_page, hub)  # a local visit: the session cookie, no token

    link = row(page, "alpha").locator("a.log-link")
    expect(link).to_have_text("Logs")
    expect(link).to_have_attribute("href", "/hub/logs/view?model=alpha")
    expect(row(page, "quiet").locator("a.log-link")).to_have_count(0)
    link.click()

    page.wait_for_url(f"{hub.url}/hub/logs/view?model=alpha")
    expect(page.locator("h1")).to_have_text("Log of alpha")
    expect(page.locator("#log-path")).to_have_text(str(log))
    expect(page.locator("#log-state")).to_have_text("live")
    lines = page.locator("#log-lines .log-line")
    expect(lines).to_have_text(["first line", "second line"])

    page.evaluate("window.notReloaded = true")
    with log.open("a") as fh:
        fh.write("a line written <b>later</b>\n")
    expect(lines).to_have_text(["first line", "second line", "a line written <b>later</b>"])
    assert page.evaluate("window.notReloaded") is True


def test_logs_view_of_the_hub_log(hub_factory: HubFactory, open_page: PageFactory) -> None:
    """Without a model the view follows hub.log (the hub's own records)."""
    hub = hub_factory([fake_model("alpha")])
    page = open_dashboard(open_page, hub)
    page.goto(f"{hub.url}/hub/logs/view")
    expect(page.locator("h1")).to_have_text("Hub log")
    expect(page.locator("#log-lines")).to_contain_text("Hub listening on")
