"""Each worker command's `launch --help`: read once per hub, remembered across starts.

The hub passes a worker only the options its `launch` lists (worker_flags.py), so it
reads `launch --help` before the first start of each worker command. The real worker
needs about 3.6 s for that (its CLI imports the whole MLX stack). A fresh hub therefore
uses the text the last hub stored (`<log_path>/launch_help_cache.json`) at once, and
reads it again in the background at low priority: a worker upgraded in place is
noticed by the next load. An entry is only reused for the same command, the same
files behind it (path, size, mtime: a `pip install -U` rewrites the entry script), the
same model `env` and the same PATH/PYTHON* variables.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any

from .atomic import write_atomic
from .errors import HubError
from .process_group import signal_group
from .worker_flags import LaunchOptions, parse_launch_help

logger = logging.getLogger("mlx_hub.worker")

HELP_TIMEOUT_SECONDS = 120.0
STORED_ENTRIES = 16  # old entries (an upgraded worker's) are dropped beyond this
# Variables that can change which program a command runs, besides the model's own env.
_PROGRAM_ENV_PREFIXES = ("PATH", "PYTHON", "VIRTUAL_ENV", "CONDA_PREFIX")
_BACKGROUND_NICENESS = 10

Spawn = Callable[[Coroutine[Any, Any, Any], str], object]


class LaunchHelpCache:
    """`launch --help` of each worker command, kept in memory and on disk."""

    def __init__(self, store: Path | None, spawn: Spawn) -> None:
        """`store`: the JSON file shared by hub runs (None: memory only); `spawn`: runs a
        background task that the caller owns (and cancels on shutdown)."""
        self._store = store
        self._spawn = spawn
        self._texts: dict[str, str] | None = None  # the store's content, read once
        self._writing = asyncio.Lock()  # one write of the store at a time
        self._options: dict[object, LaunchOptions] = {}
        self._locks: dict[object, asyncio.Lock] = collections.defaultdict(asyncio.Lock)

    async def options_for(
        self, command: Sequence[str], env: Mapping[str, str], model_env: Mapping[str, str]
    ) -> LaunchOptions:
        """The flags `command launch` accepts, run with `env` (which includes `model_env`)."""
        key = (tuple(command), tuple(sorted(env.items())))
        async with self._locks[key]:
            if key not in self._options:
                self._options[key] = await self._first_read(key, command, env, model_env)
            return self._options[key]

    async def _first_read(
        self,
        key: object,
        command: Sequence[str],
        env: Mapping[str, str],
        model_env: Mapping[str, str],
    ) -> LaunchOptions:
        store_key = await asyncio.to_thread(_store_key, command, env, model_env)
        stored = (await self._stored_texts()).get(store_key)
        if stored is not None:
            self._spawn(
                self._refresh(key, store_key, command, env, stored),
                f"launch-help-refresh:{Path(command[0]).name}",
            )
            return parse_launch_help(stored)
        text = await _read_launch_help(command, env)
        await self._remember(store_key, text)
        return parse_launch_help(text)

    async def _refresh(
        self,
        key: object,
        store_key: str,
        command: Sequence[str],
        env: Mapping[str, str],
        stored: str,
    ) -> None:
        """Read the help again (niced); a changed text replaces the stored one."""
        try:
            text = await _read_launch_help(command, env, niceness=_BACKGROUND_NICENESS)
        except HubError as exc:
            logger.warning("Re-reading the worker's options failed: %s", exc.message)
            return
        if text != stored:
            logger.info("'%s launch' options changed; using the new ones", " ".join(command))
            self._options[key] = parse_launch_help(text)
            await self._remember(store_key, text)

    async def _stored_texts(self) -> dict[str, str]:
        if self._texts is None:
            texts = await asyncio.to_thread(_read_store, self._store)
            if self._texts is None:  # not read meanwhile by another first load
                self._texts = texts
        return self._texts

    async def _remember(self, store_key: str, text: str) -> None:
        texts = await self._stored_texts()
        texts.pop(store_key, None)
        texts[store_key] = text  # newest last
        while len(texts) > STORED_ENTRIES:
            texts.pop(next(iter(texts)))
        if self._store is not None:
            async with self._writing:
                await asyncio.to_thread(_write_store, self._store, dict(texts))


async def _read_launch_help(
    command: Sequence[str], env: Mapping[str, str], niceness: int = 0
) -> str:
    """Run `command launch --help` (in its own process group) and return its text."""

    def lower_priority() -> None:
        with contextlib.suppress(OSError):
            os.nice(niceness)

    try:
        proc = await asyncio.create_subprocess_exec(
            *command,
            "launch",
            "--help",
            env=dict(env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lower_priority if niceness else None,
        )
    except OSError as exc:
        raise HubError(f"Cannot run worker command {list(command)}: {exc}", status=503) from exc
    try:
        async with asyncio.timeout(HELP_TIMEOUT_SECONDS):
            out, _ = await proc.communicate()
    except TimeoutError as exc:
        raise HubError(f"'{' '.join(command)} launch --help' did not finish", 503) from exc
    finally:
        if proc.returncode is None:  # timed out, or the hub is shutting down
            signal_group(proc.pid, signal.SIGKILL)
            await asyncio.shield(proc.wait())
    text = out.decode("utf-8", "replace")
    if proc.returncode != 0 or "--model-path" not in text:
        tail = " | ".join(text.strip().splitlines()[-5:])
        raise HubError(
            f"'{' '.join(command)} launch --help' failed (exit {proc.returncode}): {tail}",
            status=503,
        )
    return text


def _store_key(command: Sequence[str], env: Mapping[str, str], model_env: Mapping[str, str]) -> str:
    program_env = {k: v for k, v in env.items() if k.startswith(_PROGRAM_ENV_PREFIXES)}
    identity = {
        "command": list(command),
        "files": [_file_identity(part, env) for part in command],
        "env": sorted({**program_env, **model_env}.items()),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def _file_identity(part: str, env: Mapping[str, str]) -> list[Any] | None:
    """Where `part` names a file (or a program on PATH): its real path, size and mtime."""
    found = part if os.sep in part else shutil.which(part, path=env.get("PATH"))
    if not found:
        return None
    try:
        real = os.path.realpath(found)
        st = os.stat(real)
    except OSError:
        return None
    return [real, st.st_size, st.st_mtime_ns] if os.path.isfile(real) else None


def _read_store(path: Path | None) -> dict[str, str]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # missing or damaged: it is only a cache
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}


def _write_store(path: Path, texts: dict[str, str]) -> None:
    try:
        write_atomic(path, json.dumps(texts), mode=0o600)
    except OSError as exc:
        # Not worth a warning on the page: the next start just reads the help again.
        logger.debug("Cannot store worker options in %s: %s", path, exc)
