"""Typed keys for what the aiohttp application carries."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from .auth import Auth
    from .supervisor import Supervisor

SUPERVISOR_KEY: web.AppKey[Supervisor] = web.AppKey("supervisor")
AUTH_KEY: web.AppKey[Auth] = web.AppKey("auth")
