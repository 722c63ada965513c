"""Bodies of the fake's answers: text taken from requests, fake vectors and images, and
the plans of its Server-Sent Event streams (chat, completions and the Responses API)."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import struct
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .knobs import BadRequest

DONE = b"data: [DONE]\n\n"


def _tiny_png() -> bytes:
    """A valid 1x1 red RGB PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


PNG_B64 = base64.b64encode(_tiny_png()).decode()


def _text_of(content: Any) -> str:
    """Text of a message content: a string, or the text of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def last_user_text(messages: Any) -> str:
    if isinstance(messages, str):
        return messages
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role", "user") == "user":
            return _text_of(message.get("content"))
    return ""


def prompt_text(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        return " ".join(item for item in prompt if isinstance(item, str))
    return ""


def embedding_inputs(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(item, int) for item in value):
            return [" ".join(map(str, value))]
        if all(isinstance(item, str) for item in value):
            return value
        if all(isinstance(item, list) for item in value):
            return [" ".join(map(str, item)) for item in value]
    raise BadRequest("'input' must be a string, a list of strings or of token lists")


def fake_vector(text: str, dims: int) -> list[float]:
    """Deterministic values in [-1, 1), exact in float32 (multiples of 1/128)."""
    values: list[float] = []
    for counter in itertools.count():
        if len(values) >= dims:
            break
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        values.extend((byte - 128) / 128 for byte in digest)
    return values[:dims]


def token_usage(prompt: str, completion_tokens: int) -> dict[str, int]:
    prompt_tokens = len(prompt.split())
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def sse(data: Any, event: str | None = None) -> bytes:
    payload = b"data: " + json.dumps(data).encode() + b"\n\n"
    return payload if event is None else b"event: " + event.encode() + b"\n" + payload


def include_usage(body: Mapping[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


@dataclass
class StreamPlan:
    """What one SSE stream sends: fixed head frames, content chunk i, tail frames (given n)."""

    head: list[bytes]
    chunk: Callable[[int], bytes]
    tail: Callable[[int], list[bytes]]


def chat_stream(
    base: Mapping[str, Any], who: Mapping[str, Any], body: Mapping[str, Any]
) -> StreamPlan:
    """A chat completion stream: ``base`` holds the id, object, created and model fields."""

    def chunk(index: int) -> bytes:
        delta = {"content": f"tok{index} "}
        if index == 0:
            delta = {"role": "assistant", **delta}
        choice = {"index": 0, "delta": delta, "finish_reason": None}
        return sse({**base, "choices": [choice], "fake_worker": who})

    def tail(count: int) -> list[bytes]:
        choice = {"index": 0, "delta": {}, "finish_reason": "stop"}
        frames = [sse({**base, "choices": [choice], "fake_worker": who})]
        if include_usage(body):
            usage = token_usage(last_user_text(body.get("messages")), count)
            frames.append(sse({**base, "choices": [], "usage": usage, "fake_worker": who}))
        return frames

    return StreamPlan([], chunk, tail)


def completion_stream(
    base: Mapping[str, Any], who: Mapping[str, Any], body: Mapping[str, Any]
) -> StreamPlan:
    """A text completion stream: ``base`` holds the id, object, created and model fields."""

    def frame(text: str, finish: str | None) -> bytes:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        return sse({**base, "choices": [choice], "fake_worker": who})

    def tail(count: int) -> list[bytes]:
        frames = [frame("", "stop")]
        if include_usage(body):
            usage = token_usage(prompt_text(body.get("prompt")), count)
            frames.append(sse({**base, "choices": [], "usage": usage, "fake_worker": who}))
        return frames

    return StreamPlan([], lambda index: frame(f"tok{index} ", None), tail)


@dataclass(frozen=True)
class Reply:
    """One Responses API answer: its ids, the request's input text and who answers it."""

    response_id: str
    message_id: str
    prompt: str
    who: Mapping[str, Any]
    model: str
    created: int

    def response(self, text: str | None) -> dict[str, Any]:
        """The Response object; ``text`` None means in progress (no output yet)."""
        output = []
        if text is not None:
            part = {"type": "output_text", "text": text, "annotations": []}
            message = {
                "type": "message",
                "id": self.message_id,
                "status": "completed",
                "role": "assistant",
                "content": [part],
            }
            output.append(message)
        output_tokens = 0 if text is None else len(text.split())
        input_tokens = len(self.prompt.split())
        return {
            "id": self.response_id,
            "object": "response",
            "created_at": self.created,
            "status": "in_progress" if text is None else "completed",
            "model": self.model,
            "output": output,
            "parallel_tool_calls": False,
            "tool_choice": "auto",
            "tools": [],
            "usage": {
                "input_tokens": input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": input_tokens + output_tokens,
            },
            "fake_worker": self.who,
        }

    def stream(self) -> StreamPlan:
        """The typed ``event:`` frames of a streamed Response, one delta per token."""
        where = {"item_id": self.message_id, "output_index": 0, "content_index": 0}
        in_progress = {"type": "message", "id": self.message_id, "status": "in_progress"}
        item = {**in_progress, "role": "assistant", "content": []}
        empty_part = {"type": "output_text", "text": "", "annotations": []}

        def event(kind: str, sequence: int, **data: Any) -> bytes:
            return sse({"type": kind, "sequence_number": sequence, **data}, event=kind)

        head = [
            event("response.created", 0, response=self.response(None)),
            event("response.output_item.added", 1, output_index=0, item=item),
            event("response.content_part.added", 2, part=empty_part, **where),
        ]

        def chunk(index: int) -> bytes:
            delta = f"tok{index} "
            return event("response.output_text.delta", 3 + index, delta=delta, logprobs=[], **where)

        def tail(count: int) -> list[bytes]:
            text = "".join(f"tok{index} " for index in range(count))
            done = self.response(text)
            message = done["output"][0]
            seq = 3 + count
            return [
                event("response.output_text.done", seq, text=text, logprobs=[], **where),
                event("response.content_part.done", seq + 1, part=message["content"][0], **where),
                event("response.output_item.done", seq + 2, output_index=0, item=message),
                event("response.completed", seq + 3, response=done),
            ]

        return StreamPlan(head, chunk, tail)
