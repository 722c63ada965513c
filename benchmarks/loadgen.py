"""The load generator: a minimal keep-alive HTTP/1.1 client, timed requests, statistics."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def ms(seconds: float) -> float:
    """Seconds as milliseconds, to the microsecond."""
    return round(seconds * 1000, 3)


def log(message: str) -> None:
    """A progress line on stderr (stdout is for the table)."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def chat_body(model: str, *, stream: bool = False, **extra: Any) -> bytes:
    """A small chat request, encoded once (the same bytes go direct and through the hub)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "Say hello in one word."}],
        "stream": stream,
    }
    body.update(extra)
    return json.dumps(body).encode()


class _Stale(Exception):
    """The connection closed before a single byte of the answer arrived."""


@dataclass
class Answer:
    """One HTTP answer as the load generator saw it (times in seconds from sending)."""

    status: int
    headers_s: float
    first_data_s: float
    total_s: float
    size: int
    tail: bytes
    body: bytes = b""  # a sized (non-chunked) body only


class RawClient:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams (uvloop when present).

    Cheaper per chunk than a full client library, so it is never the bottleneck: with
    aiohttp's client the direct side of a 20,000-chunk stream was slower than the hub's,
    because the hub coalesces small chunks and the client paid per read. Like curl, it
    reads whatever has arrived (up to 256 KiB) and only walks the chunk framing.
    """

    READ = 256 * 1024

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[tuple[asyncio.StreamReader, Any]]] = {}
        # Header lines sent to one port only (a guarded worker's secret, for direct calls).
        self.headers_for: dict[int, str] = {}

    async def close(self) -> None:
        """Close every pooled connection."""
        for conns in self._idle.values():
            for _, writer in conns:
                writer.close()
        self._idle.clear()

    async def post(self, url: str, body: bytes) -> Answer:
        """POST `body` as JSON and read the whole answer (chunked or sized)."""
        return await self.request("POST", url, body)

    async def request(self, method: str, url: str, body: bytes = b"") -> Answer:
        """Send one request on a pooled connection and read the whole answer."""
        rest = url.removeprefix("http://")
        hostport, _, path = rest.partition("/")
        host, _, port_text = hostport.partition(":")
        key = (host, int(port_text))
        pool = self._idle.setdefault(key, [])
        request = (
            f"{method} /{path} HTTP/1.1\r\nHost: {hostport}\r\n{self.headers_for.get(key[1], '')}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        while True:
            pooled = bool(pool)
            if pooled:
                reader, writer = pool.pop()
            else:
                reader, writer = await asyncio.open_connection(host, key[1])
            start = time.perf_counter()
            try:
                writer.write(request)
                answer, reusable = await self._read_answer(reader, start)
                break
            except _Stale:
                writer.close()
                if not pooled:
                    raise ConnectionError("connection closed before the answer's headers") from None
                # A kept-alive connection the server had closed: try a fresh one.
            except BaseException:
                writer.close()
                raise
        if reusable:
            pool.append((reader, writer))
        else:
            writer.close()
        return answer

    async def _read_answer(self, reader: asyncio.StreamReader, start: float) -> tuple[Answer, bool]:
        buf = bytearray()
        body = b""
        while (end := buf.find(b"\r\n\r\n")) < 0:
            try:
                more = await reader.read(self.READ)
            except ConnectionResetError:
                more = b""
            if not more:
                if not buf:
                    raise _Stale
                raise ConnectionError("connection closed in the middle of the answer's headers")
            buf += more
        headers_s = time.perf_counter() - start
        lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        del buf[: end + 4]
        reusable = fields.get("connection", "").lower() != "close"
        if "chunked" in fields.get("transfer-encoding", "").lower():
            first, size, tail = await self._read_chunked(reader, buf, start)
        elif "content-length" in fields:
            need = int(fields["content-length"])
            while len(buf) < need:
                more = await reader.read(self.READ)
                if not more:
                    raise ConnectionError("connection closed in the middle of the body")
                buf += more
            first = headers_s if need else time.perf_counter() - start
            size, tail, body = need, bytes(buf[-64:]), bytes(buf[:need])
        else:
            while more := await reader.read(self.READ):
                buf += more
            first, size, tail, reusable = headers_s, len(buf), bytes(buf[-64:]), False
        total = time.perf_counter() - start
        return Answer(status, headers_s, first, total, size, tail, body), reusable

    async def _read_chunked(
        self, reader: asyncio.StreamReader, buf: bytearray, start: float
    ) -> tuple[float, int, bytes]:
        """Walk the chunk framing: (first data byte time, payload bytes, last payload)."""
        pos = 0
        size_total = 0
        first = None
        tail = b""
        while True:
            while (line_end := buf.find(b"\r\n", pos)) < 0:
                more = await reader.read(self.READ)
                if not more:
                    raise ConnectionError("stream ended without its last chunk")
                buf += more
            size = int(bytes(buf[pos:line_end]).split(b";")[0], 16)
            need = line_end + 2 + size + 2
            while len(buf) < need:
                more = await reader.read(self.READ)
                if not more:
                    raise ConnectionError("stream ended in the middle of a chunk")
                buf += more
            if size == 0:
                return first or time.perf_counter() - start, size_total, tail
            if first is None:
                first = time.perf_counter() - start
            size_total += size
            tail = bytes(buf[need - 2 - min(size, 64) : need - 2])
            pos = need
            if pos > self.READ:
                del buf[:pos]
                pos = 0


async def timed_request(client: RawClient, url: str, body: bytes) -> float:
    """Seconds from sending a non-streaming request to having its whole answer."""
    answer = await client.post(url, body)
    if answer.status != 200:
        raise RuntimeError(f"{url}: {answer.status} {answer.tail!r}")
    return answer.total_s


async def timed_stream(client: RawClient, url: str, body: bytes) -> Answer:
    """A streamed answer, checked to be complete (ends with `data: [DONE]`)."""
    answer = await client.post(url, body)
    if answer.status != 200:
        raise RuntimeError(f"{url}: {answer.status} {answer.tail!r}")
    if not answer.tail.rstrip().endswith(b"data: [DONE]"):
        raise RuntimeError(f"{url}: stream ended without [DONE] (tail {answer.tail!r})")
    return answer


def new_session() -> aiohttp.ClientSession:
    """For the control API and health probes (not timed)."""
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600))


async def interleaved(
    pairs: int, direct: Callable[[], Awaitable[float]], hub: Callable[[], Awaitable[float]]
) -> tuple[list[float], list[float]]:
    """Run direct and hub one after the other, alternating which goes first (ABBA)."""
    d: list[float] = []
    h: list[float] = []
    for i in range(pairs):
        if i % 2:
            h.append(await hub())
            d.append(await direct())
        else:
            d.append(await direct())
            h.append(await hub())
    return d, h


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """Keep the load generator's garbage collector out of the timings."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
