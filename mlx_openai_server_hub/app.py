"""The hub process: one aiohttp app on one port, and its start and shutdown.

`serve()` is the foreground entry point (`mlx-openai-server-hub serve`):
load hub.yaml, end workers a killed predecessor left behind, listen, start
the default models, then wait for SIGTERM/SIGINT or `/hub/shutdown` and shut
down gracefully (requests in flight finish, then every worker is stopped).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import attrs
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from .access_log import setup_access_log
from .auth import (
    OPEN_PATHS,
    OPEN_PREFIXES,
    SAFE_METHODS,
    Auth,
    bearer_of,
    load_or_create_token,
    local_names,
)
from .bodies import MAX_BODY_BYTES
from .config import HubConfig, load_config
from .contract import TokenError
from .control_api import SHUTDOWN_EVENT_KEY, setup_control_api
from .dashboard import setup_dashboard
from .downloads_api import setup_download_api
from .errors import HubError, error_response
from .keys import AUTH_KEY, SUPERVISOR_KEY
from .logs import LogFiles, setup_hub_logging
from .logs_api import setup_logs_api
from .proxy import setup_proxy
from .runtime_state import (
    RuntimeState,
    WorkerRecord,
    hub_alive,
    read_runtime,
    reap_leftover_workers,
    remove_runtime,
    write_runtime,
)
from .supervisor import Supervisor

logger = logging.getLogger("mlx_hub")

# A connection that sends no (complete) request for this long is closed: idle
# keep-alive connections, and clients that never finish their headers. aiohttp's
# own default is an hour, which lets stalled clients pile up open files.
IDLE_CONNECTION_SECONDS = 75.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --------------------------------------------------------------- middlewares


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as an OpenAI envelope; the hub keeps running."""
    try:
        return await handler(request)
    except HubError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.reason if exc.text is None else _http_text(exc), exc.status)
    except (web.RequestPayloadError, HttpProcessingError) as exc:
        # A body aiohttp cannot decode (bad gzip, broken chunking, a multipart part with
        # broken headers): the client's fault, not the hub's.
        return error_response(f"Malformed request body: {_payload_reason(exc)}", 400)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        logger.exception("Unhandled error on %s %s", request.method, request.path)
        return error_response("Internal server error", 500, "internal_error")


def _http_text(exc: web.HTTPException) -> str:
    text = exc.text or exc.reason
    return text.removeprefix(f"{exc.status}: ")


def _payload_reason(exc: Exception) -> str:
    """aiohttp's payload errors read "400, message:\\n  <reason>": keep the reason."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Host check for everyone; token or page session for /hub and /metrics (unless
    metrics_public); origin and API keys for /v1."""
    auth = request.app[AUTH_KEY]
    path = request.path
    if path == "/health":
        return await handler(request)
    if not auth.host_allowed(request):
        return error_response(
            f"Host '{request.headers.get('Host', '')}' is not a name of this hub", 403
        )
    if path == "/hub" or path.startswith("/hub/") or path == "/metrics":
        public = path == "/metrics" and request.app[SUPERVISOR_KEY].config.metrics_public
        refusal = None if public else _control_refusal(auth, request)
        if refusal is not None:
            return refusal
    elif path.startswith("/v1/"):
        if "Origin" in request.headers and not auth.same_origin(request):
            # A web page elsewhere can send a "simple" POST (text/plain, a form) without
            # a CORS preflight: it must not make this machine load and run models.
            return error_response("Cross-origin request refused", 403)
        if not auth.check_api_key(bearer_of(request)):
            return error_response("Invalid or missing API key (Authorization: Bearer <key>)", 401)
    return await handler(request)


def _control_refusal(auth: Auth, request: web.Request) -> web.Response | None:
    path = request.path
    open_page = path == "/hub" and request.method in SAFE_METHODS
    if open_page or path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
        return None
    token = bearer_of(request)
    if token is not None:
        if auth.check_token(token):
            return None
        return error_response("Invalid hub token", 401, "authentication_error")
    if auth.has_session(request):
        if request.method in SAFE_METHODS or auth.same_origin(request):
            return None
        return error_response("Cross-origin request refused", 403)
    return error_response(
        "Missing hub token: send 'Authorization: Bearer <token>' (the token is in hub.token "
        "beside hub.yaml, or MLX_HUB_TOKEN)",
        401,
        "authentication_error",
    )


# ----------------------------------------------------------------- the app


def build_app(
    supervisor: Supervisor, auth: Auth, runtime: RuntimeFile | None = None
) -> web.Application:
    """The aiohttp application serving everything on the hub's port.

    Its start-up opens the supervisor (and starts the runtime-file writer);
    its shutdown stops every worker before connections are closed, so a
    stream still running past the grace period ends instead of holding the
    exit up.
    """
    app = web.Application(
        middlewares=[error_middleware, auth_middleware],
        client_max_size=MAX_BODY_BYTES,
        handler_args={"auto_decompress": False},  # bodies.read_body decodes (see why there)
    )
    app[SUPERVISOR_KEY] = supervisor
    app[AUTH_KEY] = auth
    app[SHUTDOWN_EVENT_KEY] = asyncio.Event()
    setup_access_log(app, supervisor.metrics)
    if runtime is not None:
        app.cleanup_ctx.append(runtime.context)
    app.cleanup_ctx.append(_supervisor_context)
    app.on_shutdown.append(_stop_workers)
    setup_control_api(app)
    setup_proxy(app)
    setup_dashboard(app)
    setup_download_api(app, supervisor.downloads)
    setup_logs_api(app)
    return app


async def _supervisor_context(app: web.Application) -> AsyncIterator[None]:
    supervisor = app[SUPERVISOR_KEY]
    await supervisor.open()
    yield
    await supervisor.shutdown(0)


async def _stop_workers(app: web.Application) -> None:
    await app[SUPERVISOR_KEY].shutdown(0)


class RuntimeFile:
    """Keeps hub_runtime.json current, writing off the event loop.

    A failed write shows in the status warnings (through `log_files`): without
    the file, the next start cannot end the workers of a hub that was killed.
    """

    def __init__(self, path: Path, state: RuntimeState, log_files: LogFiles) -> None:
        self.path = path
        self.state = state
        self._log_files = log_files
        self._dirty = asyncio.Event()
        self._dirty.set()
        self._closing = False

    def update(self, workers: dict[str, WorkerRecord]) -> None:
        """Record the current workers (written soon after)."""
        self.state.workers = workers
        self._dirty.set()

    async def context(self, _app: web.Application) -> AsyncIterator[None]:
        """The writer runs while the app does; the file is removed when it ends."""
        writer = asyncio.create_task(self.run(), name="runtime-file-writer")
        yield
        # Let a write in progress finish rather than cancel it: its thread would
        # go on and could recreate the file after it is removed.
        self._closing = True
        self._dirty.set()
        await writer
        remove_runtime(self.path, self.state.pid)

    async def run(self) -> None:
        """Write the file whenever it changed, until the app shuts down."""
        while True:
            await self._dirty.wait()
            if self._closing:
                return
            self._dirty.clear()
            snapshot = attrs.evolve(self.state, workers=dict(self.state.workers))
            try:
                await asyncio.to_thread(write_runtime, self.path, snapshot)
            except OSError as exc:
                logger.warning("Cannot write %s: %s", self.path, exc)
                self._log_files.record_error(str(self.path), exc)
            else:
                self._log_files.record_ok(str(self.path))


def serve(config_path: Path, *, log_to_stderr: bool = True) -> int:
    """Run the hub in the foreground until it is stopped; return the exit code.

    Raises ConfigError for a bad hub.yaml before anything starts.
    """
    config = load_config(config_path)
    with contextlib.suppress(ImportError):
        import uvloop

        return uvloop.run(_serve(config, log_to_stderr))
    return asyncio.run(_serve(config, log_to_stderr))


async def _serve(config: HubConfig, log_to_stderr: bool) -> int:
    log_files = LogFiles()
    try:
        return await _run_hub(config, log_files, log_to_stderr)
    finally:
        log_files.close()


async def _run_hub(config: HubConfig, log_files: LogFiles, log_to_stderr: bool) -> int:
    with contextlib.suppress(OSError):
        config.log_path.mkdir(mode=0o700, parents=True, exist_ok=True)
    setup_hub_logging(config.log_level, log_files, config.log_path, log_to_stderr)
    logger.info(
        "Loaded hub config from %s with %d model(s) and %d group(s)",
        config.source_path,
        len(config.models),
        len(config.groups),
    )
    if not _clear_previous_run(config):
        return 1
    names = local_names(config.host) | {h.lower() for h in config.allowed_hosts}
    try:
        token = load_or_create_token(config.token_path)
    except (TokenError, OSError) as exc:
        logger.error("Cannot use the control token: %s", exc)
        return 1
    auth = Auth(token, config.api_keys, names, configured_hosts=config.allowed_hosts)
    state = RuntimeState(os.getpid(), config.host, config.port)
    runtime = RuntimeFile(config.runtime_path, state, log_files)
    supervisor = Supervisor(config, log_files, on_workers_changed=runtime.update)
    app = build_app(supervisor, auth, runtime)
    runner = web.AppRunner(
        app,
        handler_cancellation=True,
        access_log=None,
        keepalive_timeout=IDLE_CONNECTION_SECONDS,
    )
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, config.host, config.port, reuse_address=True).start()
        except OSError as exc:
            logger.error("Cannot listen on %s:%d (hub port): %s", config.host, config.port, exc)
            return 1
        logger.info("Hub listening on http://%s:%d", config.host, config.port)
        supervisor.start_defaults()
        await _wait_for_stop(app[SHUTDOWN_EVENT_KEY], supervisor)
        logger.info("Hub daemon shutting down")
        await supervisor.shutdown(config.shutdown_grace)
        return 0
    finally:
        await runner.cleanup()
        logger.info("Hub stopped")


def _clear_previous_run(config: HubConfig) -> bool:
    """Refuse to run twice; end the workers a killed predecessor left behind."""
    previous = read_runtime(config.runtime_path)
    if previous is None:
        return True
    if hub_alive(previous):
        logger.error(
            "Another hub is already running (pid %d, port %d); see %s",
            previous.pid,
            previous.port,
            config.runtime_path,
        )
        return False
    for leftover in reap_leftover_workers(previous):
        logger.warning("Ended a worker left behind by a previous hub run: %s", leftover)
    return True


async def _wait_for_stop(stop: asyncio.Event, supervisor: Supervisor) -> None:
    """Wait for SIGTERM, SIGINT, SIGHUP or /hub/shutdown. A second signal kills workers now.

    SIGHUP (the terminal running `serve` closed) stops the hub like SIGTERM: its
    default action would end the hub at once and leave the workers behind.
    """
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            logger.warning("Second signal: killing workers now")
            supervisor.kill_all_now()
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, on_signal)
    await stop.wait()
