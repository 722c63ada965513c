"""Reading request bodies without letting a stalled client hold a handler forever.

aiohttp has no timeout of its own for a body that stops arriving: a client that
sends headers and half a body, then nothing, would keep its handler (and its
connection) forever. Every handler that reads a body does it through
`read_within_idle_timeout`, which answers 408 once no body byte arrived for
`BODY_IDLE_SECONDS`. A slow but live upload is never cut: the clock restarts
whenever bytes arrive.

The hub decodes a compressed body (`Content-Encoding: gzip` or `deflate`) itself, with
`read_body`, rather than letting aiohttp's parser do it (the server runs with
`auto_decompress=False`): when the parser fails to decode a body that arrives after its
headers, it never ends the handler's stream, and the handler waited for the idle timeout
(aiohttp 3.14). Decoding here makes a broken body an immediate 400 and caps what a small
body may inflate to.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import Awaitable
from typing import Any, TypeVar

from aiohttp import web

from .errors import HubError
from .sizes import format_size

# Read at call time (not bound as a default) so tests can shorten it.
BODY_IDLE_SECONDS = 30.0
# The largest request body, as sent and once decoded.
MAX_BODY_BYTES = 100 * 1024 * 1024
DECODABLE = ("gzip", "x-gzip", "deflate")

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


async def read_body(request: web.Request) -> bytes:
    """The whole body of `request`, decoded from its Content-Encoding (408, 400, 413, 415)."""
    codings = content_codings(request)
    raw = await read_within_idle_timeout(request, request.read())
    if not codings or not raw:
        return raw
    # Off the event loop: a few kilobytes may inflate to MAX_BODY_BYTES.
    return await asyncio.get_running_loop().run_in_executor(None, decode_body, raw, codings)


def content_codings(request: web.Request) -> list[str]:
    """The request's Content-Encoding codings, in the order they were applied (415 if unknown).

    `identity` is no coding at all and is left out.
    """
    codings = [
        coding.strip().lower()
        for value in request.headers.getall("Content-Encoding", ())
        for coding in value.split(",")
    ]
    codings = [coding for coding in codings if coding and coding != "identity"]
    for coding in codings:
        if coding not in DECODABLE:
            raise HubError(
                f"Content-Encoding {coding!r} is not supported: send the body "
                "uncompressed, or as gzip or deflate",
                415,
            )
    return codings


def require_plain_body(request: web.Request, what: str) -> None:
    """415 unless `request`'s body is sent uncompressed (`what` names the body)."""
    if content_codings(request):
        raise HubError(f"{what} must be sent without a Content-Encoding", 415)


def decode_body(raw: bytes, codings: list[str], limit: int | None = None) -> bytes:
    """Undo `codings` (last applied, first undone); 400 if `raw` is not what they say.

    413 once the decoded body would pass `limit` (MAX_BODY_BYTES by default): a few
    kilobytes of gzip can inflate to gigabytes.
    """
    cap = MAX_BODY_BYTES if limit is None else limit
    data = raw
    for coding in reversed(codings):
        data = _inflate(data, coding, cap)
    return data


def _inflate(data: bytes, coding: str, cap: int) -> bytes:
    out = bytearray()
    rest = data
    # A gzip body may be several members one after the other (RFC 1952 §2.2).
    while rest:
        inflater = zlib.decompressobj(_window_bits(coding, rest))
        try:
            out += inflater.decompress(rest, cap + 1 - len(out))
        except zlib.error as exc:
            raise HubError(f"The request body is not valid {coding}: {exc}", 400) from None
        if len(out) > cap:
            raise HubError(f"Request body is larger than {format_size(cap)} once decoded", 413)
        if not inflater.eof:
            raise HubError(f"The request body is not valid {coding}: it is cut off", 400)
        rest = inflater.unused_data
        if rest and coding == "deflate":
            raise HubError("The request body is not valid deflate: data after its end", 400)
    return bytes(out)


def _window_bits(coding: str, data: bytes) -> int:
    if coding != "deflate":
        return 16 + zlib.MAX_WBITS  # gzip's header and trailer
    # `deflate` should be zlib-wrapped (RFC 9110 §8.4.1.2), but some clients send raw
    # deflate: a zlib header has compression method 8 and is a multiple of 31.
    wrapped = len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
    return zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS


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
