"""A stand-in for the Hugging Face Hub endpoints huggingface_hub downloads from.

Point `HF_ENDPOINT` at it. It serves generated model repos with the routes
`hf_hub_download` / `snapshot_download` / `HfApi.model_info` use:

- `GET /api/models/{org}/{name}[/revision/{rev}]`  model info with sha + siblings
- `GET /api/models/{org}/{name}/tree/{rev}`         file tree (snapshot_download)
- `HEAD|GET /{org}/{name}/resolve/{rev}/{path}`     file bytes, ETag, X-Repo-Commit,
  Content-Length, and `Range` support for resumes

`repo_from_folder` serves real files (the e2e tiny model) instead.

Knobs (per `FakeHub`): `bytes_per_s` (slow transfer), `drop_after` (close the
connection after N bytes of a file's first `drops` GETs), `missing` (404) and
gated repos (401 without the right token). Every byte served is counted per
file so tests can prove nothing was fetched twice.

Run standalone: `python tests/fake_hf.py --port N --repo org/name:3:200000`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import hashlib
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
from aiohttp import web

CHUNK = 16 * 1024
HUB_KEY: web.AppKey[FakeHub] = web.AppKey("hub")
DEFAULT_TOKEN = "hf_fake_token_abcdefghijklmnop"


@attrs.define
class FakeRepo:
    """A generated repo: file name -> bytes, one commit per revision."""

    repo_id: str
    files: dict[str, bytes]
    revisions: dict[str, str] = attrs.field(factory=dict)
    gated: bool = False

    def commit(self, revision: str) -> str | None:
        """The commit sha for a branch name or a commit sha."""
        if revision in self.revisions.values():
            return revision
        return self.revisions.get(revision)


def make_repo(
    repo_id: str, n_weights: int = 2, weight_size: int = 200_000, gated: bool = False
) -> FakeRepo:
    """A small model-shaped repo: config, tokenizer, and `n_weights` safetensors shards."""
    files: dict[str, bytes] = {
        "config.json": json.dumps({"model_type": "fake", "hidden_size": 8}).encode(),
        "tokenizer.json": json.dumps({"version": "1.0", "model": {}}).encode(),
    }
    weight_map = {}
    for i in range(n_weights):
        name = f"model-{i + 1:05d}-of-{n_weights:05d}.safetensors"
        seed = hashlib.sha256(f"{repo_id}/{name}".encode()).digest()
        files[name] = (seed * (weight_size // len(seed) + 1))[:weight_size]
        weight_map[f"layer{i}.weight"] = name
    files["model.safetensors.index.json"] = json.dumps({"weight_map": weight_map}).encode()
    main = hashlib.sha1(repo_id.encode()).hexdigest()
    other = hashlib.sha1(f"{repo_id}@v2".encode()).hexdigest()
    return FakeRepo(repo_id, files, {"main": main, "v2": other}, gated)


def repo_from_folder(repo_id: str, folder: Path) -> FakeRepo:
    """A repo serving the files of `folder` (a real model, say), one revision `main`."""
    files = {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }
    return FakeRepo(repo_id, files, {"main": hashlib.sha1(repo_id.encode()).hexdigest()})


@attrs.define
class FakeHub:
    """The stand-in's state, knobs and counters."""

    repos: dict[str, FakeRepo] = attrs.field(factory=dict)
    token: str = DEFAULT_TOKEN
    bytes_per_s: float | None = None
    drop_after: int | None = None
    drops: int = 1
    bytes_served: collections.Counter[str] = attrs.field(factory=collections.Counter)
    gets: collections.Counter[str] = attrs.field(factory=collections.Counter)
    requests: list[dict[str, Any]] = attrs.field(factory=list)
    # Set to pause every transfer (tests use it to hold a download "in flight").
    gate: asyncio.Event | None = None
    endpoint: str = ""  # set by `start`

    def add(self, repo: FakeRepo) -> FakeRepo:
        self.repos[repo.repo_id] = repo
        return repo


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response(
        {"error": message},
        status=status,
        headers={"X-Error-Code": code, "X-Error-Message": message},
    )


def _etag(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _authorized(hub: FakeHub, repo: FakeRepo, request: web.Request) -> bool:
    return not repo.gated or request.headers.get("Authorization") == f"Bearer {hub.token}"


def _lookup(
    hub: FakeHub, request: web.Request, revision: str
) -> tuple[FakeRepo, str] | web.Response:
    repo_id = f"{request.match_info['org']}/{request.match_info['name']}"
    hub.requests.append(
        {
            "method": request.method,
            "path": request.path,
            "range": request.headers.get("Range"),
            "auth": "Authorization" in request.headers,
        }
    )
    repo = hub.repos.get(repo_id)
    if repo is None:
        return _error(404, "RepoNotFound", "Repository not found")
    if not _authorized(hub, repo, request):
        return _error(401, "GatedRepo", "Access to model is restricted; you must be authenticated.")
    commit = repo.commit(revision)
    if commit is None:
        return _error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
    return repo, commit


async def model_info(request: web.Request) -> web.Response:
    hub: FakeHub = request.app[HUB_KEY]
    found = _lookup(hub, request, request.match_info.get("rev", "main"))
    if isinstance(found, web.Response):
        return found
    repo, commit = found
    siblings = [
        {"rfilename": n, "size": len(d), "blobId": _etag(d)[:40]} for n, d in repo.files.items()
    ]
    return web.json_response(
        {
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "sha": commit,
            "private": False,
            "siblings": siblings,
        }
    )


async def tree(request: web.Request) -> web.Response:
    hub: FakeHub = request.app[HUB_KEY]
    found = _lookup(hub, request, request.match_info["rev"])
    if isinstance(found, web.Response):
        return found
    repo, _ = found
    entries = [
        {"type": "file", "path": n, "size": len(d), "oid": _etag(d)[:40]}
        for n, d in repo.files.items()
    ]
    return web.json_response(entries)


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    match = re.fullmatch(r"bytes=(\d+)-(\d*)", header or "")
    if not match:
        return None
    start = int(match.group(1))
    end = int(match.group(2)) if match.group(2) else size - 1
    return start, min(end, size - 1)


async def _send(
    hub: FakeHub, request: web.Request, resp: web.StreamResponse, name: str, body: bytes
) -> None:
    """Stream `body`, honouring the slow and drop knobs."""
    drop = hub.drop_after if hub.gets[name] <= hub.drops else None
    sent = 0
    for offset in range(0, len(body), CHUNK):
        if hub.gate is not None:
            await hub.gate.wait()
        piece = body[offset : offset + CHUNK]
        if drop is not None and sent + len(piece) > drop:
            piece = piece[: max(drop - sent, 0)]
            await resp.write(piece)
            hub.bytes_served[name] += len(piece)
            assert request.transport is not None
            request.transport.close()  # the client sees a body shorter than Content-Length
            return
        await resp.write(piece)
        sent += len(piece)
        hub.bytes_served[name] += len(piece)
        if hub.bytes_per_s:
            await asyncio.sleep(len(piece) / hub.bytes_per_s)
    await resp.write_eof()


async def resolve(request: web.Request) -> web.StreamResponse:
    hub: FakeHub = request.app[HUB_KEY]
    found = _lookup(hub, request, request.match_info["rev"])
    if isinstance(found, web.Response):
        return found
    repo, commit = found
    name = request.match_info["path"]
    data = repo.files.get(name)
    if data is None:
        return _error(404, "EntryNotFound", f"{name} does not exist")
    headers = {"ETag": f'"{_etag(data)}"', "X-Repo-Commit": commit, "Accept-Ranges": "bytes"}
    span = _byte_range(request.headers.get("Range"), len(data))
    status = 206 if span else 200
    start, end = span or (0, len(data) - 1)
    if span:
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
    headers["Content-Length"] = str(end - start + 1)
    if request.method == "HEAD":
        return web.Response(status=200, headers={**headers, "Content-Length": str(len(data))})
    hub.gets[name] += 1
    resp = web.StreamResponse(status=status, headers=headers)
    await resp.prepare(request)
    await _send(hub, request, resp, name, data[start : end + 1])
    return resp


def make_app(hub: FakeHub) -> web.Application:
    """The aiohttp app serving `hub`."""
    app = web.Application()
    app[HUB_KEY] = hub
    repo = "/api/models/{org}/{name}"
    app.router.add_get(repo, model_info)
    app.router.add_get(repo + "/revision/{rev}", model_info)
    app.router.add_get(repo + "/tree/{rev}", tree)
    app.router.add_route("*", "/{org}/{name}/resolve/{rev}/{path:.+}", resolve)
    return app


async def start(hub: FakeHub, port: int = 0) -> tuple[web.AppRunner, str]:
    """Serve `hub` on 127.0.0.1; returns the runner (clean up) and the endpoint URL."""
    runner = web.AppRunner(make_app(hub), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    server = site._server
    assert server is not None
    bound = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    hub.endpoint = f"http://127.0.0.1:{bound}"
    return runner, hub.endpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--repo", action="append", default=[], help="org/name[:n_weights[:size]]")
    parser.add_argument("--gated", action="append", default=[], help="org/name of a gated repo")
    parser.add_argument("--bytes-per-s", type=float, default=None)
    args = parser.parse_args()
    hub = FakeHub(bytes_per_s=args.bytes_per_s)
    for spec in args.repo + args.gated:
        repo_id, *rest = spec.split(":")
        numbers = [int(x) for x in rest]
        hub.add(make_repo(repo_id, *numbers, gated=spec in args.gated))
    web.run_app(make_app(hub), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()


@contextlib.contextmanager
def serving_in_thread(hub: FakeHub) -> Iterator[str]:
    """Serve `hub` on its own event-loop thread (for tests whose code under test runs
    its own loop); yields the endpoint."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner, endpoint = asyncio.run_coroutine_threadsafe(start(hub), loop).result(10)
    try:
        yield endpoint
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
