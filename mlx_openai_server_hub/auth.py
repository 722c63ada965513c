"""Who may talk to the hub: the control token, page sessions, API keys.

- `/hub/...` needs the control token as `Authorization: Bearer <token>`, or a
  session cookie that the status page got (loopback visitors get one on
  sight; others by typing the token once). A state-changing request carried
  by a cookie must come from the page's own origin.
- `/v1/...` needs one of `api_keys` when that list is set.
- Every request must name the hub by a Host it knows (DNS-rebinding guard).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
import socket
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

import psutil
from aiohttp import web

TOKEN_ENV_VAR = "MLX_HUB_TOKEN"
SESSION_COOKIE = "mlx_hub_session"
# Unauthenticated paths: liveness and the page's own way in.
OPEN_PATHS = frozenset({"/health", "/hub/login"})
OPEN_PREFIXES = ("/hub/static/",)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def load_or_create_token(path: Path) -> str:
    """The control token: `MLX_HUB_TOKEN`, else the file at `path` (made if absent).

    The file is created with mode 0600 from the start (O_EXCL), so it is never
    readable by others, not even for a moment.
    """
    from_env = os.environ.get(TOKEN_ENV_VAR, "").strip()
    if from_env:
        return from_env
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race; use its token
        return path.read_text(encoding="utf-8").strip()
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(token + "\n")
    return token


def read_token(path: Path) -> str | None:
    """The control token for a client: `MLX_HUB_TOKEN`, else the file, else None."""
    from_env = os.environ.get(TOKEN_ENV_VAR, "").strip()
    if from_env:
        return from_env
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def secrets_equal(given: str, expected: str) -> bool:
    """Constant-time comparison of two secrets."""
    # surrogatepass: a header with bytes that are not UTF-8 is a wrong secret, not a crash.
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def bearer_of(request: web.Request) -> str | None:
    """The Bearer credential of a request, if any."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def is_loopback(host: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`."""
    if not host:
        return False
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_host(host_header: str) -> str:
    """The host part of a Host header (`[::1]:8000` → `::1`, `a:80` → `a`); "" if malformed."""
    if any(char in host_header for char in "@/?#\\"):
        return ""  # userinfo or a path: not a plain host[:port], never a name of ours
    try:
        parsed = urlsplit("//" + host_header)
    except ValueError:  # e.g. an unclosed "[::1"
        return ""
    return (parsed.hostname or "").lower()


def local_names(configured_host: str) -> frozenset[str]:
    """Every name this machine answers to: loopback, hostnames, interface addresses."""
    names = {"localhost", "127.0.0.1", "::1"}
    hostname = socket.gethostname().lower()
    names |= {hostname, hostname.split(".")[0], hostname.split(".")[0] + ".local"}
    if configured_host not in ("", "0.0.0.0", "::"):
        names.add(configured_host.strip("[]").lower())
    for addresses in psutil.net_if_addrs().values():
        for addr in addresses:
            if addr.family in (socket.AF_INET, socket.AF_INET6):
                names.add(addr.address.split("%")[0].lower())
    return frozenset(names)


class Auth:
    """The hub's credentials and the checks made on every request."""

    def __init__(self, token: str, api_keys: Iterable[str], allowed_hosts: Iterable[str]) -> None:
        self.token = token
        self.api_keys = tuple(api_keys)
        self.allowed_hosts = frozenset(allowed_hosts)
        self._sessions: set[str] = set()

    def check_token(self, given: str | None) -> bool:
        """True when `given` is the control token."""
        return given is not None and secrets_equal(given, self.token)

    def check_api_key(self, given: str | None) -> bool:
        """True when `/v1` is open or `given` is one of the API keys."""
        if not self.api_keys:
            return True
        if given is None:
            return False
        # Compare against all keys so timing does not reveal which one matched.
        return any([secrets_equal(given, key) for key in self.api_keys])

    def new_session(self) -> str:
        """Create a page session and return its cookie value."""
        session = secrets.token_urlsafe(32)
        self._sessions.add(session)
        return session

    def has_session(self, request: web.Request) -> bool:
        """True when the request carries a live session cookie."""
        value = request.cookies.get(SESSION_COOKIE)
        return value is not None and any(secrets_equal(value, s) for s in self._sessions)

    def set_session_cookie(self, response: web.StreamResponse) -> None:
        """Give the browser a new HttpOnly, SameSite=Strict session cookie."""
        response.set_cookie(
            SESSION_COOKIE, self.new_session(), httponly=True, samesite="Strict", path="/"
        )

    def host_allowed(self, request: web.Request) -> bool:
        """True when the Host header names this hub (guards against DNS rebinding)."""
        host = split_host(request.headers.get("Host", ""))
        return host in self.allowed_hosts

    def is_local_visit(self, request: web.Request) -> bool:
        """A browser on this machine: loopback peer and loopback Host."""
        peer = request.remote
        host = split_host(request.headers.get("Host", ""))
        return is_loopback(peer) and is_loopback(host)

    @staticmethod
    def same_origin(request: web.Request) -> bool:
        """True when Origin (or Referer) is the hub itself, as the Host header names it."""
        source = request.headers.get("Origin") or request.headers.get("Referer")
        if not source or source == "null":
            return False
        parsed = urlsplit(source)
        return parsed.scheme in ("http", "https") and parsed.netloc.lower() == (
            request.headers.get("Host", "").lower()
        )
