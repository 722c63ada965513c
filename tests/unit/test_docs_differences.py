"""Every "Differences from the reference" section names things that exist.

A difference that names a key, a route or a status field that the hub does
not have misleads exactly the users who read it: those moving from the
reference. Each backticked name in those sections is checked against the
real config tables, the app's routes and the documents the hub serves.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mlx_openai_server_hub.config import (
    GROUP_KEYS,
    MODEL_KEY_ALIASES,
    MODEL_KEYS,
    TOP_LEVEL_KEYS,
)

DOCS = Path(__file__).resolve().parents[2] / "docs"
CONFIG_KEYS = {*TOP_LEVEL_KEYS, *GROUP_KEYS, *MODEL_KEYS, *MODEL_KEY_ALIASES}
# `name` or `name: value` where the name is snake_case: a key, a field or a file.
SNAKE = re.compile(r"^([a-z][a-z0-9]*(?:_[a-z0-9*]+)+)(?::.*)?$")
ROUTE = re.compile(r"(?:^|\s)(/(?:hub|v1|health)(?:/[^\s`]*)?)")


def differences(doc: str) -> list[str]:
    """The backticked snippets of `doc`'s Differences section."""
    text = (DOCS / doc).read_text()
    section = text.split("## Differences from the reference", 1)[1]
    return re.findall(r"`([^`]+)`", section)


@pytest.fixture
async def served(hub_app) -> tuple[set[str], set[str]]:
    """The app's route patterns and every field name of its status documents."""
    app, supervisor = hub_app
    model = supervisor.get("a")
    model._move(process=model.process.RUNNING)
    routes = {_route_pattern(r.get_info()) for r in app.router.resources()}
    fields: set[str] = set()
    _collect(supervisor.status(), "", fields)
    _collect(supervisor.model_list(), "", fields)
    return routes, fields


def _collect(value: object, prefix: str, into: set[str]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            into.update({key, f"{prefix}{key}"})
            _collect(inner, f"{prefix}{key}.", into)
    elif isinstance(value, list):
        for inner in value:
            _collect(inner, "", into)


def _route_exists(path: str, routes: set[str]) -> bool:
    path = path.split("?", 1)[0].rstrip(".,")
    return any(
        re.fullmatch(pattern, alternative.replace("*", "load"))
        for pattern in routes
        for alternative in _alternatives(path)
    )


def _route_pattern(info: dict) -> str:
    """The regular expression an aiohttp resource matches (plain or dynamic)."""
    return info["pattern"].pattern if "pattern" in info else re.escape(info["path"])


def _alternatives(path: str) -> list[str]:
    """`/hub/service/start|stop|reload` → each of the three paths."""
    head, _, last = path.rpartition("/")
    return [f"{head}/{choice}" for choice in last.split("|")] if "|" in last else [path]


@pytest.mark.parametrize("doc", ["api.md", "configuration.md", "cli.md"])
async def test_documented_differences_name_real_keys_routes_and_fields(doc, served):
    routes, fields = served
    unknown = []
    for snippet in differences(doc):
        for path in ROUTE.findall(snippet):
            if not _route_exists(path, routes):
                unknown.append(f"route {path}")
        match = SNAKE.match(snippet)
        if match is None:
            continue
        name = match.group(1)
        if name in CONFIG_KEYS or name in fields:
            continue
        if name.endswith("*") and any(f.startswith(name[:-1]) for f in fields):
            continue
        unknown.append(f"name {name}")
    assert unknown == [], f"docs/{doc} Differences name things the hub does not have"


async def test_the_check_catches_a_made_up_name(served):
    routes, fields = served
    assert not _route_exists("/hub/models/x/teleport", routes)
    assert _route_exists("/hub/models/qwen/vram/load", routes)
    assert "no_such_key" not in CONFIG_KEYS | fields
