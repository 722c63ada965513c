"""The control API under `/hub/...` (the CLI, the status page and curl use it).

Actions answer when they are done (a load can take minutes). They run as
tasks the supervisor owns, so a client that disconnects does not cancel them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web

from .bodies import parse_json_object, read_body
from .errors import HubError
from .keys import SUPERVISOR_KEY
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .openapi import OPENAPI_PATH, openapi_handler
from .supervisor import Supervisor

logger = logging.getLogger("mlx_hub.control")

SHUTDOWN_EVENT_KEY: web.AppKey[asyncio.Event] = web.AppKey("shutdown_requested")

Action = Callable[[Supervisor, str], Coroutine[Any, Any, None]]

# path segment → (what it asks the supervisor, the verb of its message)
MODEL_ACTIONS: dict[str, tuple[Action, str]] = {
    "start": (Supervisor.start, "start"),
    "stop": (Supervisor.stop, "stop"),
    "load": (Supervisor.load, "memory load"),
    "unload": (Supervisor.unload, "memory unload"),
}


def setup_control_api(app: web.Application) -> None:
    """Register the `/hub/...` JSON routes and `/health`."""
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_get(OPENAPI_PATH, openapi_handler)
    app.router.add_get("/hub/status", status)
    app.router.add_post("/hub/reload", reload_config)
    app.router.add_post("/hub/shutdown", shutdown)
    app.router.add_post("/hub/service/start", service_start)
    app.router.add_post("/hub/service/stop", service_stop)
    app.router.add_post("/hub/service/reload", service_reload)
    app.router.add_post("/hub/models/{name}/{action:start|stop|load|unload}", model_action)
    app.router.add_post("/hub/models/{name}/vram/{action:load|unload}", vram_action)


async def health(_request: web.Request) -> web.Response:
    """Liveness of the hub itself (open, no token)."""
    return web.json_response({"status": "ok", "model_id": None, "model_status": "controller"})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition (the token is checked by the auth middleware)."""
    body = await request.app[SUPERVISOR_KEY].metrics.render()
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})


async def status(request: web.Request) -> web.Response:
    """The live state of every configured model (never reloads, never waits)."""
    return web.json_response(request.app[SUPERVISOR_KEY].status())


async def reload_config(request: web.Request) -> web.Response:
    """Re-read hub.yaml and reconcile; `{"started","stopped","unchanged","restarted"}`."""
    await _ignore_body(request)
    return web.json_response(await request.app[SUPERVISOR_KEY].reload())


async def shutdown(request: web.Request) -> web.Response:
    """Stop every worker and exit (after this answer is sent)."""
    await _ignore_body(request)
    request.app[SHUTDOWN_EVENT_KEY].set()
    return web.json_response(
        {"status": "ok", "action": "stop", "message": "Shutdown requested", "details": {}}
    )


async def service_start(request: web.Request) -> web.Response:
    """The hub answering this is the service: it is already running."""
    await _ignore_body(request)
    return _service_reply("start", "Hub manager already running.", None)


async def service_stop(request: web.Request) -> web.Response:
    """Same as `/hub/shutdown`, in the service-action shape the page expects."""
    await _ignore_body(request)
    request.app[SHUTDOWN_EVENT_KEY].set()
    return _service_reply(
        "stop",
        "Hub controller stop requested. Hub manager shutdown requested",
        {"controller_stopped": True, "manager_shutdown": True},
    )


async def service_reload(request: web.Request) -> web.Response:
    """Reload, in the service-action shape the page expects."""
    await _ignore_body(request)
    diff = await request.app[SUPERVISOR_KEY].reload()
    return _service_reply("reload", "Hub configuration reloaded", dict(diff))


async def model_action(request: web.Request) -> web.Response:
    """`POST /hub/models/{name}/start|stop|load|unload`; answers when done."""
    action, name, verb = await _run_model_action(request)
    return _model_reply(action, name, f"Model '{name}' {verb} requested")


async def vram_action(request: web.Request) -> web.Response:
    """`POST /hub/models/{name}/vram/load|unload`: the same as load/unload."""
    action, name, _verb = await _run_model_action(request)
    return _model_reply(action, name, f"VRAM {action} requested for '{name}'")


async def _run_model_action(request: web.Request) -> tuple[str, str, str]:
    """Run the path's action on the path's model: (action, model name, verb for the reply)."""
    await _ignore_body(request)
    action = request.match_info["action"]
    name = _model_name(request)
    run, verb = MODEL_ACTIONS[action]
    await _run_owned(request.app[SUPERVISOR_KEY], run, action, name)
    return action, name, verb


def _model_reply(action: str, name: str, message: str) -> web.Response:
    return web.json_response({"status": "ok", "action": action, "model": name, "message": message})


def _model_name(request: web.Request) -> str:
    name = request.match_info["name"].strip()
    if not name:
        raise HubError("Model name cannot be empty", 400)
    request.app[SUPERVISOR_KEY].get(name)  # 404 before anything else
    return name


async def _run_owned(supervisor: Supervisor, run: Action, action: str, name: str) -> None:
    """Run an action so that a client hanging up does not cancel it."""
    await supervisor.run_owned(run(supervisor, name), f"{action}:{name}")


async def _ignore_body(request: web.Request) -> None:
    """Bodies are optional here, but if one is sent it must be a JSON object."""
    if not request.can_read_body:
        return
    raw = await read_body(request)
    if not raw.strip():
        return
    parse_json_object(raw, "Request body must be a JSON object (or empty)")


def _service_reply(action: str, message: str, details: dict[str, Any] | None) -> web.Response:
    return web.json_response(
        {"status": "ok", "action": action, "message": message, "details": details}
    )
