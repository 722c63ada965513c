"""The status page at `/hub`: a template, its script and styles, and the way in.

- `GET /hub` serves the page. A browser of this machine's own user that
  reaches the hub directly (see `Auth.is_local_visit`) gets it right away plus
  a session cookie; a visitor holding a session (or the Bearer token) gets it
  too; anyone else gets the login form.
- `GET /hub/login?token=...` (the link the CLI prints) and `POST /hub/login`
  (the form, at most LOGIN_MAX_BYTES) trade the control token for a session
  cookie; too many wrong tokens from one address get 429 for a while.
- `POST /hub/logout` ends the session (the page's "Sign out" button).
- `/hub/static/...` serves `hub.js` and `hub.css`: no CDN, no build step.

The page holds no secret: its requests ride on the HttpOnly session cookie.
The auth middleware (app.py) lets `/hub/login`, `/hub/static/*` and the exact
`GET /hub` through without credentials, so the decisions above are made here.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from .auth import SESSION_COOKIE, bearer_of
from .bodies import read_within_idle_timeout, require_plain_body
from .errors import error_response
from .keys import AUTH_KEY, SUPERVISOR_KEY

PAGE_TEMPLATE = "hub_status.html.jinja"
LOGIN_TEMPLATE = "hub_login.html.jinja"
STATIC_FILES = ("hub.css", "hub.js", "hub_logs.js")
DISABLED_MESSAGE = "Hub status page is disabled in configuration."
# The form holds one token: a bigger body is refused before it is read.
LOGIN_MAX_BYTES = 4096

# The page loads nothing from elsewhere and may not be framed.
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}
# The login URL may carry the token: never pass it on in a Referer.
_LOGIN_HEADERS = {**_PAGE_HEADERS, "Referrer-Policy": "no-referrer"}


def _asset_dir(name: str) -> Path:
    """`templates` or `static`: inside the package (wheel), else at the repo root."""
    here = Path(__file__).resolve().parent
    candidates = (here / name, here.parent / name)
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise RuntimeError(f"status page assets not found: tried {', '.join(map(str, candidates))}")


def templates_dir() -> Path:
    """Where the page's Jinja templates live."""
    return _asset_dir("templates")


def static_dir() -> Path:
    """Where `hub.js` and `hub.css` live."""
    return _asset_dir("static")


def setup_dashboard(app: web.Application) -> None:
    """Set up Jinja and register `/hub`, `/hub/login` and `/hub/static/...` on `app`."""
    aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(str(templates_dir())))
    app.router.add_get("/hub", hub_page)
    app.router.add_get("/hub/login", login_link)
    app.router.add_post("/hub/login", login_form)
    app.router.add_post("/hub/logout", logout)
    # Only the page's own files: no path from the URL ever reaches the file system.
    app.router.add_get("/hub/static/{filename:.*}", static_file)


def _page_enabled(request: web.Request) -> bool:
    """The current config's `enable_status_page` (it may change on reload)."""
    return bool(request.app[SUPERVISOR_KEY].config.enable_status_page)


def _asset_url(request: web.Request, filename: str) -> str:
    """`/hub/static/<filename>?v=<hash>`, so a new release is never served stale."""
    version = hashlib.sha256((static_dir() / filename).read_bytes()).hexdigest()[:16]
    return f"/hub/static/{filename}?v={version}"


async def static_file(request: web.Request) -> web.StreamResponse:
    """`GET /hub/static/<name>`: one of STATIC_FILES, else 404 (the error envelope)."""
    filename = request.match_info["filename"]
    if filename not in STATIC_FILES:
        raise web.HTTPNotFound()
    return web.FileResponse(static_dir() / filename)


def _render(
    request: web.Request, template: str, context: dict[str, Any], status: int = 200
) -> web.Response:
    """Render `template` with the page's security headers."""
    context = {
        "css_url": _asset_url(request, "hub.css"),
        "js_url": _asset_url(request, "hub.js"),
        **context,
    }
    response = aiohttp_jinja2.render_template(template, request, context, status=status)
    headers = _PAGE_HEADERS if template == PAGE_TEMPLATE else _LOGIN_HEADERS
    response.headers.update(headers)
    return response


def _login_page(request: web.Request, error: str | None = None) -> web.Response:
    """The login form, always with status 401 (the visitor is not signed in)."""
    return _render(request, LOGIN_TEMPLATE, {"error": error}, status=401)


def _signed_in_redirect(request: web.Request) -> web.Response:
    """303 to `/hub` with a fresh session cookie."""
    response = web.Response(status=303, headers={"Location": "/hub", **_LOGIN_HEADERS})
    request.app[AUTH_KEY].set_session_cookie(request, response)
    return response


async def hub_page(request: web.Request) -> web.Response:
    """`GET /hub`: the page for local or signed-in visitors, else the login form."""
    if not _page_enabled(request):
        return error_response(DISABLED_MESSAGE, 404)
    auth = request.app[AUTH_KEY]
    if auth.has_session(request):
        return _render(request, PAGE_TEMPLATE, {})
    if auth.check_token(bearer_of(request)) or await auth.is_local_visit(request):
        response = _render(request, PAGE_TEMPLATE, {})
        auth.set_session_cookie(request, response)
        return response
    return _login_page(request)


async def login_link(request: web.Request) -> web.Response:
    """`GET /hub/login[?token=...]`: the form, or the CLI's login link."""
    if not _page_enabled(request):
        return error_response(DISABLED_MESSAGE, 404)
    token = request.query.get("token")
    if token is None:
        if request.app[AUTH_KEY].has_session(request):
            raise web.HTTPSeeOther("/hub")
        return _login_page(request)
    return _try_token(request, token.strip())


async def login_form(request: web.Request) -> web.Response:
    """`POST /hub/login` with form field `token`."""
    if not _page_enabled(request):
        return error_response(DISABLED_MESSAGE, 404)
    if request.content_length is not None and request.content_length > LOGIN_MAX_BYTES:
        raise web.HTTPRequestEntityTooLarge(LOGIN_MAX_BYTES, request.content_length)
    require_plain_body(request, "The login form")
    # A clone with a small client_max_size stops reading a chunked body at the cap.
    capped = request.clone(client_max_size=LOGIN_MAX_BYTES)
    try:
        form = await read_within_idle_timeout(request, capped.post())
    except (ValueError, AssertionError):  # a broken multipart body
        return error_response("Malformed form body", 400)
    token = form.get("token")
    token = token.strip() if isinstance(token, str) else ""
    if not token:
        return _login_page(request, "Enter the hub token.")
    return _try_token(request, token)


def _try_token(request: web.Request, token: str) -> web.Response:
    """Sign in with `token`, unless this client has guessed wrong too often (429)."""
    auth = request.app[AUTH_KEY]
    client = request.remote or ""
    wait = auth.logins.retry_after(client)
    if wait > 0:
        # Even the right token: a guesser must learn nothing while it waits.
        seconds = math.ceil(wait)
        message = f"Too many wrong tokens from {client}; try again in {seconds} s"
        return error_response(message, 429, headers={"Retry-After": str(seconds)})
    if auth.check_token(token):
        return _signed_in_redirect(request)
    auth.logins.failed(client)
    return _login_page(request, "That token is not valid.")


async def logout(request: web.Request) -> web.Response:
    """`POST /hub/logout`: end this browser's session and show the login form (303)."""
    request.app[AUTH_KEY].end_session(request)
    response = web.Response(status=303, headers={"Location": "/hub/login", **_LOGIN_HEADERS})
    response.del_cookie(SESSION_COOKIE, path="/")
    return response
