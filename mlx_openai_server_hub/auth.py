"""Who may talk to the hub: the control token, page sessions, API keys.

- `/hub/...` needs the control token as `Authorization: Bearer <token>`, or a
  session cookie that the status page got (a browser of this machine's own
  user, reaching the hub directly, gets one on sight; others by typing the
  token once). A state-changing request carried by a cookie must come from
  the page's own origin.
- `/v1/...` needs one of `api_keys` when that list is set.
- Every request must name the hub by a Host it knows (DNS-rebinding guard).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import secrets
import socket
import time
from collections import deque
from collections.abc import Iterable
from urllib.parse import urlsplit

import psutil
from aiohttp import web

from .contract import MIN_TOKEN_LENGTH, is_wildcard
from .contract import TOKEN_ENV_VAR as TOKEN_ENV_VAR
from .contract import load_or_create_token as load_or_create_token
from .contract import read_token as read_token
from .peer_user import peer_is_own_user

SESSION_COOKIE = "mlx_hub_session"
# Unauthenticated paths: liveness and the page's own way in.
OPEN_PATHS = frozenset({"/health", "/hub/login", "/hub/openapi.json"})
OPEN_PREFIXES = ("/hub/static/",)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# A page session ends this long after it was given, or when the hub stops.
SESSION_SECONDS = 7 * 24 * 3600.0
# At most this many live sessions; a new one beyond it ends the oldest.
MAX_SESSIONS = 1000
# Wrong tokens per client (peer address) on the login form within the window,
# after which the form answers 429 (even to the right token) until it passes.
LOGIN_FAILURES = 10
LOGIN_WINDOW_SECONDS = 60.0
MAX_LOGIN_CLIENTS = 10_000
# Headers a reverse proxy adds: such a request is not a browser on this machine.
PROXY_HEADERS = ("forwarded", "via", "x-real-ip")
PROXY_HEADER_PREFIX = "x-forwarded-"


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
    """The host part of a Host header (`[::1]:8000` → `::1`, `a:80` → `a`); "" if malformed.

    A port, when given, must be a number from 1 to 65535 (`localhost:abc` and
    `127.0.0.1:80.evil.example` are malformed).
    """
    if any(char in host_header for char in "@/?#\\"):
        return ""  # userinfo or a path: not a plain host[:port], never a name of ours
    try:
        parsed = urlsplit("//" + host_header)
        port = parsed.port
    except ValueError:  # e.g. an unclosed "[::1", or a port that is not a number
        return ""
    if host_header.endswith(":") or (port is not None and not 0 < port < 65536):
        return ""
    return (parsed.hostname or "").lower()


def local_names(configured_host: str) -> frozenset[str]:
    """Every name this machine answers to: loopback, hostnames, interface addresses."""
    names = {"localhost", "127.0.0.1", "::1"}
    hostname = socket.gethostname().lower()
    names |= {hostname, hostname.split(".")[0], hostname.split(".")[0] + ".local"}
    if not is_wildcard(configured_host):
        names.add(configured_host.strip("[]").lower())
    for addresses in psutil.net_if_addrs().values():
        for addr in addresses:
            if addr.family in (socket.AF_INET, socket.AF_INET6):
                names.add(addr.address.split("%")[0].lower())
    return frozenset(names)


def is_proxied(request: web.Request) -> bool:
    """True when a reverse proxy says it forwarded the request (Forwarded, Via, X-Forwarded-*…)."""
    return any(
        name.lower() in PROXY_HEADERS or name.lower().startswith(PROXY_HEADER_PREFIX)
        for name in request.headers
    )


def came_over_tls(request: web.Request) -> bool:
    """True when the browser used https: to the hub itself, or to a proxy that says so.

    Believing a forged `X-Forwarded-Proto` only makes the cookie stricter.
    """
    if request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https":
        return True
    return "proto=https" in request.headers.get("Forwarded", "").lower().replace('"', "")


def _forwarded_host(request: web.Request) -> str:
    """The Host the browser sent to a proxy in front (X-Forwarded-Host or Forwarded host=)."""
    if "X-Forwarded-Host" in request.headers:
        return request.headers["X-Forwarded-Host"].split(",")[0].strip().lower()
    for part in request.headers.get("Forwarded", "").split(",")[0].split(";"):
        key, _, value = part.strip().partition("=")
        if key.lower() == "host":
            return value.strip('"').lower()
    return ""


def _digest(session: str) -> bytes:
    # Sessions are kept and looked up by hash: a dict lookup, and nothing to time.
    return hashlib.sha256(session.encode("utf-8", "surrogatepass")).digest()


class LoginLimiter:
    """At most LOGIN_FAILURES wrong tokens per client within LOGIN_WINDOW_SECONDS."""

    def __init__(self) -> None:
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, client: str) -> float:
        """Seconds until `client` may try again (0: now)."""
        failures = self._failures.get(client)
        if failures is None:
            return 0.0
        now = time.monotonic()
        while failures and failures[0] <= now - LOGIN_WINDOW_SECONDS:
            failures.popleft()
        if not failures:
            del self._failures[client]
            return 0.0
        if len(failures) < LOGIN_FAILURES:
            return 0.0
        return failures[0] + LOGIN_WINDOW_SECONDS - now

    def failed(self, client: str) -> None:
        """Count one wrong token from `client`."""
        if client not in self._failures and len(self._failures) >= MAX_LOGIN_CLIENTS:
            # A flood of addresses must not grow memory: forget the longest-known one.
            del self._failures[next(iter(self._failures))]
        self._failures.setdefault(client, deque(maxlen=LOGIN_FAILURES)).append(time.monotonic())


class Auth:
    """The hub's credentials and the checks made on every request."""

    def __init__(
        self,
        token: str,
        api_keys: Iterable[str],
        allowed_hosts: Iterable[str],
        configured_hosts: Iterable[str] = (),
    ) -> None:
        if len(token) < MIN_TOKEN_LENGTH:
            # An empty token would let `?token=` in; the loader refuses short ones first.
            raise ValueError(f"the control token must have at least {MIN_TOKEN_LENGTH} characters")
        self.token = token
        self.api_keys = tuple(api_keys)
        self.allowed_hosts = frozenset(allowed_hosts)
        # `allowed_hosts` from hub.yaml: names of the hub behind a proxy or an alias. When
        # set, no visitor gets a session without the token (a proxy makes every visitor
        # look local), and a page at one of these names is the hub's own origin.
        self.configured_hosts = frozenset(h.lower() for h in configured_hosts)
        self.logins = LoginLimiter()
        # digest → when it ends (time.time(): a Mac asleep still counts); oldest first.
        self._sessions: dict[bytes, float] = {}

    def check_token(self, given: str | None) -> bool:
        """True when `given` is the control token (never when it is empty)."""
        return given is not None and given != "" and secrets_equal(given, self.token)

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
        now = time.time()
        while self._sessions:
            digest, ends = next(iter(self._sessions.items()))
            if ends > now and len(self._sessions) < MAX_SESSIONS:
                break
            del self._sessions[digest]  # expired, or the oldest one over the cap
        session = secrets.token_urlsafe(32)
        self._sessions[_digest(session)] = now + SESSION_SECONDS
        return session

    def has_session(self, request: web.Request) -> bool:
        """True when the request carries a live session cookie."""
        value = request.cookies.get(SESSION_COOKIE)
        if not value:
            return False
        digest = _digest(value)
        ends = self._sessions.get(digest)
        if ends is None:
            return False
        if ends <= time.time():
            del self._sessions[digest]
            return False
        return True

    def end_session(self, request: web.Request) -> None:
        """Forget the request's session (logout)."""
        value = request.cookies.get(SESSION_COOKIE)
        if value:
            self._sessions.pop(_digest(value), None)

    def set_session_cookie(self, request: web.Request, response: web.StreamResponse) -> None:
        """Give the browser a new HttpOnly, SameSite=Strict (and over https, Secure) cookie."""
        response.set_cookie(
            SESSION_COOKIE,
            self.new_session(),
            httponly=True,
            samesite="Strict",
            path="/",
            secure=came_over_tls(request),
        )

    def host_allowed(self, request: web.Request) -> bool:
        """True when the Host header names this hub (guards against DNS rebinding)."""
        host = split_host(request.headers.get("Host", ""))
        return host in self.allowed_hosts

    async def is_local_visit(self, request: web.Request) -> bool:
        """A browser of this machine's own user, straight to the hub: it may skip the token.

        Loopback peer and loopback Host; no proxy headers and no `allowed_hosts` (behind a
        proxy on this machine every visitor is a loopback peer); and the client's socket
        belongs to the hub's own Unix user (another user cannot read hub.token).
        """
        if self.configured_hosts or is_proxied(request):
            return False
        if not is_loopback(split_host(request.headers.get("Host", ""))):
            return False
        peer = request.transport.get_extra_info("peername") if request.transport else None
        local = request.transport.get_extra_info("sockname") if request.transport else None
        if not peer or not local or not is_loopback(str(peer[0])):
            return False
        return await asyncio.to_thread(peer_is_own_user, peer[:2], local[:2])

    def same_origin(self, request: web.Request) -> bool:
        """True when Origin (or Referer) is the hub itself.

        The hub is who the Host header names, who a proxy in front says the browser
        asked for (X-Forwarded-Host, Forwarded host=), or an `allowed_hosts` name. A
        page elsewhere cannot add the proxy headers: they are not CORS-safelisted.
        """
        source = request.headers.get("Origin") or request.headers.get("Referer")
        if not source or source == "null":
            return False
        parsed = urlsplit(source)
        if parsed.scheme not in ("http", "https"):
            return False
        netloc = parsed.netloc.lower()
        if not netloc:
            return False
        if netloc in (request.headers.get("Host", "").lower(), _forwarded_host(request)):
            return True
        return bool(parsed.hostname) and parsed.hostname in self.configured_hosts
