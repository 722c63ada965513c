"""`POST /hub/models/{name}/pull` and the download fields of a model's status."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiohttp import web

from . import hf_cache
from .downloads import DownloadManager, offline_error
from .errors import HubError
from .keys import SUPERVISOR_KEY
from .status import download_fields

if TYPE_CHECKING:
    pass

DOWNLOADS_KEY: web.AppKey[DownloadManager] = web.AppKey("downloads")


def setup_download_api(app: web.Application, manager: DownloadManager) -> None:
    """Register the pull route; `manager` is the one the supervisor uses too."""
    app[DOWNLOADS_KEY] = manager
    app.router.add_post("/hub/models/{name}/pull", pull_model)


async def pull_model(request: web.Request) -> web.Response:
    """Start (or join) the download of a model's snapshot.

    Answers at once with the download's progress, or when it has finished
    with `?wait=1`. Offline with the snapshot missing is an immediate 503.
    """
    name = request.match_info["name"].strip()
    cfg = request.app[SUPERVISOR_KEY].get(name).config  # 404 for unknown names
    if not hf_cache.is_repo_id(cfg.model_path):
        raise HubError(
            f"Model '{name}' uses the local path {cfg.model_path}; there is nothing to pull", 400
        )
    manager = request.app[DOWNLOADS_KEY]
    revision, env = cfg.revision, dict(cfg.env)
    complete = await asyncio.to_thread(
        hf_cache.snapshot_complete, cfg.model_path, revision, env=env
    )
    missing = complete is False
    if hf_cache.hub_offline(env) and missing:
        raise offline_error(cfg.model_path, revision or hf_cache.DEFAULT_REVISION, name, env)
    progress = manager.start(cfg.model_path, revision, name, env)
    if request.query.get("wait", "").lower() in ("1", "true", "yes"):
        # shield: the download goes on for everyone else if this client hangs up.
        await asyncio.shield(manager.pull(cfg.model_path, revision, name, env))
    return web.json_response(
        {
            "status": "ok",
            "action": "pull",
            "model": name,
            "message": f"Model '{name}' download requested",
            **download_fields(manager, cfg),
            "download": progress.as_dict(),
        }
    )
