"""Reading request bodies without letting a stalled client hold a handler forever.

aiohttp has no timeout of its own for a body that stops arriving: a client that
sends headers and half a body, then nothing, would keep its handler (and its
connection) forever. Every handler that reads a body does it through
`read_within_idle_timeout`, which answers 408 once no body byte arrived for
`BODY_IDLE_SECONDS`. A slow but live upload is never cut: the clock restarts
whenever bytes arrive.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from typing import Any, TypeVar

from aiohttp import web

from .errors import HubError

# Read at call time (not bound as a default) so tests can shorten it.
BODY_IDLE_SECONDS = 30.0

T = TypeVar("T")


async def read_within_idle_timeout(request: web.Request, reading: Awaitable[T]) -> T:
    """Await `reading` (which consumes the body of `request`); 408 if the body stalls."""
    content = request.content
    if content.is_eof():
        # The whole body is already here (the usual case for JSON): no timer needed.
        return await reading
    task = asyncio.ensure_future(reading)
    try:
        seen = content.total_bytes
        while True:
            idle = BODY_IDLE_SECONDS
            done, _ = await asyncio.wait({task}, timeout=idle)
            if done:
                return task.result()
            if content.total_bytes == seen:
                raise HubError(
                    f"The request body stopped arriving: nothing received for {idle:g} s",
                    408,
                )
            seen = content.total_bytes
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def parse_json_object(raw: bytes, message: str) -> dict[str, Any]:
    """Decode a request body that must be a JSON object; 400 with `message` otherwise.

    RecursionError is caught too: `[[[[...` a few thousand deep exhausts the decoder's
    recursion limit, and that is a bad request, not a server error.
    """
    try:
        payload: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        detail = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise HubError(f"{message}: {detail}", 400) from None
    if not isinstance(payload, dict):
        raise HubError(message, 400)
    return payload
