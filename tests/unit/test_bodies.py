"""Decoding compressed request bodies (bodies.decode_body): the hub does it, not aiohttp."""

from __future__ import annotations

import gzip
import zlib

import pytest

from mlx_openai_server_hub.bodies import decode_body
from mlx_openai_server_hub.errors import HubError

BODY = b'{"model": "a", "messages": [{"role": "user", "content": "hello"}]}'


def _raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize(
    ("coded", "codings"),
    [
        (gzip.compress(BODY), ["gzip"]),
        (gzip.compress(BODY), ["x-gzip"]),
        (zlib.compress(BODY), ["deflate"]),  # zlib-wrapped, as RFC 9110 says
        (_raw_deflate(BODY), ["deflate"]),  # raw, as some clients send it
        (gzip.compress(BODY[:20]) + gzip.compress(BODY[20:]), ["gzip"]),  # two members
        (gzip.compress(zlib.compress(BODY)), ["deflate", "gzip"]),  # applied in that order
        (BODY, []),
    ],
)
def test_a_compressed_body_decodes_to_what_was_sent(coded: bytes, codings: list[str]) -> None:
    assert decode_body(coded, codings) == BODY


@pytest.mark.parametrize(
    ("coded", "coding", "detail"),
    [
        (b"{}", "deflate", "not valid deflate"),
        (b"{}", "gzip", "not valid gzip"),
        (gzip.compress(BODY)[:-12], "gzip", "cut off"),
        (zlib.compress(BODY) + b"junk", "deflate", "data after its end"),
        (gzip.compress(BODY) + b"junk", "gzip", "not valid gzip"),
    ],
)
def test_a_body_that_is_not_what_its_encoding_says_is_a_400(
    coded: bytes, coding: str, detail: str
) -> None:
    with pytest.raises(HubError) as caught:
        decode_body(coded, [coding])
    assert caught.value.status == 400
    assert detail in str(caught.value)


def test_a_body_inflating_past_the_limit_is_a_413() -> None:
    bomb = gzip.compress(b"\0" * 2_000_000)  # 2 KB that inflate to 2 MB
    assert len(bomb) < 5_000
    assert decode_body(bomb, ["gzip"], limit=2_000_000) == b"\0" * 2_000_000
    with pytest.raises(HubError) as caught:
        decode_body(bomb, ["gzip"], limit=1_999_999)
    assert caught.value.status == 413
    assert "once decoded" in str(caught.value)
    # The cap holds across members too.
    with pytest.raises(HubError):
        decode_body(bomb + bomb, ["gzip"], limit=3_000_000)
