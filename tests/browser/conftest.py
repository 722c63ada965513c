"""Browser fixtures: real headless Chromium driven by Playwright's sync API.

The browser is `MLX_HUB_TEST_CHROMIUM`, else the system's (`/usr/bin/chromium` from
Debian, or Google Chrome on a Mac), else Playwright's own Chromium (which
`scripts/test.sh` installs on a Mac without Chrome). A missing browser fails the tests
(no skip).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, ViewportSize, sync_playwright

_MAC_CHROME = "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome"
# None: Playwright's own Chromium.
CHROMIUM_PATH: str | None = os.environ.get("MLX_HUB_TEST_CHROMIUM") or next(
    (p for p in ("/usr/bin/chromium", _MAC_CHROME) if Path(p).exists()), None
)
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
)
DESKTOP: ViewportSize = {"width": 1500, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}

PageFactory = Callable[..., Page]
BrowserLauncher = Callable[..., Browser]


@pytest.fixture(scope="package")
def playwright_session() -> Iterator[Playwright]:
    """One Playwright driver for the whole run."""
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="package")
def launch_chromium(playwright_session: Playwright) -> Iterator[BrowserLauncher]:
    """Launch a headless Chromium with extra command-line flags; all closed at the end."""
    if CHROMIUM_PATH is not None and not Path(CHROMIUM_PATH).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM_PATH} (set MLX_HUB_TEST_CHROMIUM)")
    launched: list[Browser] = []

    def launch(*extra_args: str) -> Browser:
        browser = playwright_session.chromium.launch(
            executable_path=CHROMIUM_PATH, args=[*CHROMIUM_ARGS, *extra_args]
        )
        launched.append(browser)
        return browser

    yield launch
    for browser in launched:
        browser.close()


@pytest.fixture(scope="package")
def chromium(launch_chromium: BrowserLauncher) -> Browser:
    """The shared headless Chromium."""
    return launch_chromium()


@pytest.fixture
def open_page(chromium: Browser) -> Iterator[PageFactory]:
    """`open_page(browser=None, viewport=DESKTOP)`: a page in a fresh context (no cookies).

    Uncaught JavaScript errors on any page fail the test at teardown.
    """
    contexts = []
    errors: list[str] = []

    def make(browser: Browser | None = None, viewport: ViewportSize | None = None) -> Page:
        context = (browser or chromium).new_context(
            viewport=viewport or DESKTOP, locale="en-US", timezone_id="UTC"
        )
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        return page

    yield make
    for context in contexts:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
