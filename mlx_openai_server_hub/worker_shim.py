"""Only the hub gets into a worker: its port answers 403 to a request without the hub's secret.

mlx-openai-server listens on a plain 127.0.0.1 port with no auth and CORS open to every
origin, so any local process, or a web page the user visits, could run prompts on a
loaded model around the hub's `api_keys`, Host and Origin checks. Both worker lines
(1.8.x: `app.cli`; the JIT-and-Auto-Unload line: `mlx_openai_server.cli`) build their
FastAPI app in `setup_server` and serve it with `uvicorn.Server(config).serve()`.

So this file is run by the worker's own Python (`python worker_shim.py <the worker's
mlx-openai-server script> launch ...`): it makes `uvicorn.Server` wrap the app it is given
with a check of `SECRET_HEADER` against `SECRET_ENV` (hmac.compare_digest), then runs the
worker's own command line unchanged. A request without the secret, a CORS preflight
included, gets 403 before the app (and its CORS middleware) sees it.

The hub side (`guarded_command`) uses it only for a command it recognises as one of
those scripts; any other worker command runs as it is, and the hub says its port is open.
Standard library only on both sides: the worker's venv does not have the hub installed,
and the hub must not import the worker's packages.
"""

from __future__ import annotations

import functools
import hmac
import os
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

SECRET_HEADER = "X-MLX-Hub-Worker-Secret"
SECRET_ENV = "MLX_HUB_WORKER_SECRET"
# The console-script lines of the worker lines this shim knows how to guard.
KNOWN_ENTRY_POINTS = ("from app.cli import cli", "from mlx_openai_server.cli import cli")
REFUSAL = b'{"error":{"message":"Only the hub may call this worker","type":"forbidden"}}'

Scope = MutableMapping[str, Any]
Asgi = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Any]


# --- the hub's side ----------------------------------------------------------------------------


@functools.cache
def worker_secret() -> str:
    """This hub's secret for its workers (one per hub process: all its workers are its own)."""
    import secrets

    return secrets.token_urlsafe(32)


def worker_headers() -> dict[str, str]:
    """The header every request from the hub to a worker carries."""
    return {SECRET_HEADER: worker_secret()}


def guarded_command(command: list[str]) -> list[str] | None:
    """`command` run through this shim by the script's own Python; None if it is not a
    known mlx-openai-server console script (a custom `worker_command`, a test double)."""
    if len(command) != 1:
        return None
    script = Path(command[0])
    try:
        with script.open("rb") as fh:
            head = fh.read(4096).decode("utf-8", "replace")
    except OSError:
        return None
    first, _, rest = head.partition("\n")
    python = first[2:].strip() if first.startswith("#!") else ""
    # A plain interpreter path only: `#!/usr/bin/env python` could pick another Python.
    if not python or " " in python or not any(line in rest for line in KNOWN_ENTRY_POINTS):
        return None
    return [python, str(Path(__file__).resolve()), str(script)]


# --- the worker's side -------------------------------------------------------------------------


def guard(app: Asgi, secret: bytes) -> Asgi:
    """`app` behind a check of `SECRET_HEADER`: 403 without the right value."""
    header = SECRET_HEADER.lower().encode("latin-1")

    async def guarded(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            given = next((v for k, v in scope["headers"] if k == header), b"")
            if not hmac.compare_digest(given, secret):
                await _refuse(scope, send)
                return
        await app(scope, receive, send)

    return guarded


async def _refuse(scope: Scope, send: Any) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})  # uvicorn answers 403
        return
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(REFUSAL))]
    await send({"type": "http.response.start", "status": 403, "headers": headers})
    await send({"type": "http.response.body", "body": REFUSAL})


def _install(secret: bytes) -> None:
    """Make every `uvicorn.Server` serve its app behind `guard`."""
    import uvicorn
    from uvicorn.importer import import_from_string

    original = uvicorn.Server.__init__

    def guarded_init(self: Any, config: Any) -> None:
        app = import_from_string(config.app) if isinstance(config.app, str) else config.app
        config.app = guard(app, secret)
        original(self, config)

    uvicorn.Server.__init__ = guarded_init  # type: ignore[method-assign]


def main() -> None:
    """`python worker_shim.py SCRIPT ARGS...`: run SCRIPT's command line, guarded."""
    import runpy

    # Our own folder is sys.path[0]; the hub's modules there (app.py, config.py …)
    # must not shadow the worker's packages (1.8.x's is named `app`).
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        del sys.path[0]
    secret = os.environ.pop(SECRET_ENV, "").encode("utf-8")
    if len(secret) < 16:
        sys.exit(f"worker_shim: {SECRET_ENV} is not set; refusing to serve an open port")
    script, *args = sys.argv[1:]
    _install(secret)
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
