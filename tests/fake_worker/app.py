"""The fake worker's aiohttp application: its routes, the fault knobs applied to each
request, and the OpenAI-shaped answers (see the package docstring for the API)."""

from __future__ import annotations

import array
import asyncio
import base64
import itertools
import json
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from .knobs import BadRequest, Knobs, RequestKnobs, crash, hang_forever, request_knobs
from .options import LaunchArgs
from .payloads import (
    DONE,
    PNG_B64,
    Reply,
    StreamPlan,
    chat_stream,
    completion_stream,
    embedding_inputs,
    fake_vector,
    last_user_text,
    prompt_text,
    token_usage,
)

_MAX_BODY = 1 << 30

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Builder = Callable[[web.Request, Mapping[str, Any], RequestKnobs], Awaitable[web.StreamResponse]]


class FakeWorker:
    """The aiohttp application of one fake worker."""

    def __init__(self, launch: LaunchArgs, knobs: Knobs, flavor: str) -> None:
        self.launch = launch
        self.knobs = knobs
        self.flavor = flavor
        self.pid = os.getpid()
        self.served_name = launch.served_model_name or launch.model_path
        self.in_flight = 0
        self.loaded = not (flavor == "jit" and launch.jit)
        self._loading: asyncio.Future[None] | None = None
        self.created = int(time.time())
        self._ids = itertools.count(1)
        self.headers = {"x-fake-worker-pid": str(self.pid), "x-fake-worker-port": str(launch.port)}
        self.sse_headers = {
            **self.headers,
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
        }
        self.defaults = RequestKnobs(
            chunks=knobs.stream_chunks,
            chunk_delay=knobs.chunk_delay,
            crash_after=knobs.crash_after_chunks,
            hang=knobs.hang,
            delay=knobs.response_delay,
        )

    def make_app(self) -> web.Application:
        """The routes of the real worker's API that the hub and the tests use."""
        app = web.Application(client_max_size=_MAX_BODY)
        app.router.add_get("/health", self.health)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/v1/queue/stats", self.queue_stats)
        json_routes: dict[str, Builder] = {
            "/v1/chat/completions": self._chat,
            "/v1/completions": self._completion,
            "/v1/responses": self._responses,
            "/v1/embeddings": self._embeddings,
            "/v1/images/generations": self._image_generation,
        }
        for path, build in json_routes.items():
            app.router.add_post(path, self._json_endpoint(build))
        app.router.add_post("/v1/images/edits", self._form_endpoint(self._image_edit))
        app.router.add_post("/v1/audio/transcriptions", self._form_endpoint(self._transcription))
        app.on_response_prepare.append(self._echo_request_id)
        return app

    # -- plumbing ------------------------------------------------------------------------

    async def _echo_request_id(self, request: web.Request, response: web.StreamResponse) -> None:
        # Lets the tests see which request id the hub sent this worker.
        received = request.headers.get("X-Request-ID")
        if received is not None:
            response.headers["x-fake-worker-request-id"] = received

    def _json(self, data: Any, status: int = 200) -> web.Response:
        return web.Response(
            body=json.dumps(data).encode(),
            status=status,
            content_type="application/json",
            headers=self.headers,
        )

    def _error(self, status: int, message: str, code: str | None = None) -> web.Response:
        error = {"message": message, "type": "invalid_request_error", "code": code}
        return self._json({"error": error}, status)

    def _who(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        return {"pid": self.pid, "port": self.launch.port, "model": fields.get("model")}

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}-fake-{self.pid}-{next(self._ids)}"

    def _json_endpoint(self, build: Builder) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            try:
                body = json.loads(await request.read())
            except ValueError as exc:
                return self._error(400, f"Invalid JSON in request body: {exc}")
            if not isinstance(body, dict):
                return self._error(400, "The request body must be a JSON object")
            return await self._dispatch(request, body, build)

        return handler

    def _form_endpoint(self, build: Builder) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            try:
                form = await request.post()
            except ValueError as exc:
                return self._error(400, f"Invalid form body: {exc}")
            return await self._dispatch(request, form, build)

        return handler

    async def _dispatch(
        self, request: web.Request, fields: Mapping[str, Any], build: Builder
    ) -> web.StreamResponse:
        self.in_flight += 1
        try:
            knobs = request_knobs(fields, self.defaults)
            if knobs.hang:
                await hang_forever()
            model = fields.get("model")
            if self.knobs.strict_model and model != self.served_name:
                message = f"The model `{model}` does not exist"
                return self._error(404, message, "model_not_found")
            await self._ensure_loaded()
            if knobs.crash:
                crash("fake_crash")
            if knobs.delay and fields.get("stream") is not True:
                await asyncio.sleep(knobs.delay)
            return await build(request, fields, knobs)
        except BadRequest as exc:
            return self._error(400, str(exc))
        finally:
            self.in_flight -= 1

    async def _stream(
        self, request: web.Request, knobs: RequestKnobs, plan: StreamPlan
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers=self.sse_headers)
        await response.prepare(request)
        crash_after = knobs.crash_after
        try:
            for frame in plan.head:
                await response.write(frame)
            for index in range(knobs.chunks):
                if crash_after is not None and index >= crash_after:
                    crash(f"after {index} chunks")
                if knobs.chunk_delay:
                    await asyncio.sleep(knobs.chunk_delay)
                await response.write(plan.chunk(index))
            if crash_after is not None:
                crash(f"after {knobs.chunks} chunks, before the end of the stream")
            for frame in plan.tail(knobs.chunks):
                await response.write(frame)
            await response.write(DONE)
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client went away
        return response

    async def _ensure_loaded(self) -> None:
        """A --jit worker's in-process load: FAKE_LOAD_DELAY seconds, once for all callers."""
        if self.loaded:
            return
        if self._loading is None:
            self._loading = asyncio.ensure_future(self._load())
        await asyncio.shield(self._loading)

    async def _load(self) -> None:
        await asyncio.sleep(self.knobs.load_delay)
        self.loaded = True

    # -- GET endpoints -------------------------------------------------------------------

    def _model_status(self) -> str:
        if self.knobs.jit_unloaded or not self.loaded:
            return "unloaded"
        return "initialized (1 model(s))" if self.flavor == "1.8.1" else "initialized"

    async def health(self, request: web.Request) -> web.Response:
        """GET /health: answers even while every /v1 request hangs."""
        status = self._model_status()
        return self._json(
            {"status": "ok", "model_id": self.launch.model_path, "model_status": status}
        )

    async def models(self, request: web.Request) -> web.Response:
        """GET /v1/models: the one served model."""
        if self.knobs.hang:
            await hang_forever()
        model = {
            "id": self.served_name,
            "object": "model",
            "created": self.created,
            "owned_by": "mlx-openai-server",
        }
        return self._json({"object": "list", "data": [model]})

    async def queue_stats(self, request: web.Request) -> web.Response:
        """GET /v1/queue/stats: the requests in flight right now (with --jit, it loads
        the model first, as the JIT branch does)."""
        if self.knobs.hang:
            await hang_forever()
        await self._ensure_loaded()
        stats = {
            "running": self.in_flight,
            "queued": 0,
            "max_concurrency": self.launch.max_concurrency,
        }
        return self._json({"queue_stats": stats})

    # -- text endpoints ------------------------------------------------------------------

    def _base(self, prefix: str, kind: str) -> dict[str, Any]:
        """The fields a completion (or each of its chunks) starts with."""
        return {
            "id": self._new_id(prefix),
            "object": kind,
            "created": int(time.time()),
            "model": self.served_name,
        }

    async def _chat(
        self, request: web.Request, body: Mapping[str, Any], knobs: RequestKnobs
    ) -> web.StreamResponse:
        who = self._who(body)
        if body.get("stream") is True:
            base = self._base("chatcmpl", "chat.completion.chunk")
            return await self._stream(request, knobs, chat_stream(base, who, body))
        prompt = last_user_text(body.get("messages"))
        content = f"fake:{self.launch.model_path}:{prompt}"
        message = {"role": "assistant", "content": content}
        choice = {"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}
        return self._json(
            {
                **self._base("chatcmpl", "chat.completion"),
                "choices": [choice],
                "usage": token_usage(prompt, len(content.split())),
                "fake_worker": who,
            }
        )

    async def _completion(
        self, request: web.Request, body: Mapping[str, Any], knobs: RequestKnobs
    ) -> web.StreamResponse:
        who = self._who(body)
        if body.get("stream") is True:
            base = self._base("cmpl", "text_completion")
            return await self._stream(request, knobs, completion_stream(base, who, body))
        prompt = prompt_text(body.get("prompt"))
        text = f"fake:{self.launch.model_path}:{prompt}"
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}
        return self._json(
            {
                **self._base("cmpl", "text_completion"),
                "choices": [choice],
                "usage": token_usage(prompt, len(text.split())),
                "fake_worker": who,
            }
        )

    async def _responses(
        self, request: web.Request, body: Mapping[str, Any], knobs: RequestKnobs
    ) -> web.StreamResponse:
        reply = Reply(
            response_id=self._new_id("resp"),
            message_id=self._new_id("msg"),
            prompt=last_user_text(body.get("input")),
            who=self._who(body),
            model=self.served_name,
            created=self.created,
        )
        if body.get("stream") is True:
            return await self._stream(request, knobs, reply.stream())
        return self._json(reply.response(f"fake:{self.launch.model_path}:{reply.prompt}"))

    # -- other endpoints -----------------------------------------------------------------

    async def _embeddings(
        self, request: web.Request, body: Mapping[str, Any], knobs: RequestKnobs
    ) -> web.StreamResponse:
        inputs = embedding_inputs(body.get("input"))
        dims = body.get("dimensions") or 8
        if not isinstance(dims, int) or not 0 < dims <= 8192:
            raise BadRequest(f"invalid dimensions: {dims!r}")
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(inputs):
            vector: Any = fake_vector(text, dims)
            if as_base64:
                vector = base64.b64encode(array.array("f", vector).tobytes()).decode()
            data.append({"object": "embedding", "index": index, "embedding": vector})
        tokens = sum(len(text.split()) for text in inputs)
        return self._json(
            {
                "object": "list",
                "data": data,
                "model": self.served_name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                "fake_worker": self._who(body),
            }
        )

    def _images(self, fields: Mapping[str, Any], who: dict[str, Any]) -> web.Response:
        try:
            count = max(1, min(10, int(fields.get("n") or 1)))
        except (TypeError, ValueError):
            raise BadRequest(f"invalid n: {fields.get('n')!r}") from None
        data = [{"b64_json": PNG_B64} for _ in range(count)]
        return self._json({"created": int(time.time()), "data": data, "fake_worker": who})

    async def _image_generation(
        self, request: web.Request, body: Mapping[str, Any], knobs: RequestKnobs
    ) -> web.StreamResponse:
        return self._images(body, self._who(body))

    async def _image_edit(
        self, request: web.Request, form: Mapping[str, Any], knobs: RequestKnobs
    ) -> web.StreamResponse:
        files = [
            {"field": name, "filename": value.filename, "bytes": len(value.file.read())}
            for name, value in form.items()
            if isinstance(value, web.FileField)
        ]
        if not files:
            raise BadRequest("an 'image' file is required (multipart/form-data)")
        return self._images(form, {**self._who(form), "files": files})

    async def _transcription(
        self, request: web.Request, form: Mapping[str, Any], knobs: RequestKnobs
    ) -> web.StreamResponse:
        upload = form.get("file")
        if not isinstance(upload, web.FileField):
            raise BadRequest("a 'file' is required (multipart/form-data)")
        size = len(upload.file.read())
        model = form.get("model")
        text = f"fake transcription of {upload.filename} ({size} bytes) by {model}"
        if form.get("response_format") in ("text", "srt", "vtt"):
            return web.Response(text=text, content_type="text/plain", headers=self.headers)
        return self._json({"text": text, "fake_worker": self._who(form)})
