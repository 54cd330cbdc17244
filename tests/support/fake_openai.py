"""An OpenAI-compatible upstream that records each request body and streams a script.

A plain ASGI app on real hypercorn (loopback, an ephemeral port): the gateway's
``openai`` backend talks to it over HTTP exactly as it would to vLLM or llama.cpp.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve


@dataclass
class FakeOpenAI:
    """``chunks`` is the answer every chat request gets, as SSE events then ``[DONE]``."""

    chunks: list[dict[str, Any]] = field(default_factory=list)
    models: list[str] = field(default_factory=lambda: ["upstream-default"])
    bodies: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["path"].endswith("/models"):
            body = {"object": "list", "data": [{"id": m, "object": "model"} for m in self.models]}
            await self._send(send, "application/json", [json.dumps(body).encode()])
            return
        self.bodies.append(json.loads(raw))
        events = [f"data: {json.dumps(chunk)}\n\n".encode() for chunk in self.chunks]
        await self._send(send, "text/event-stream", [*events, b"data: [DONE]\n\n"])

    async def _send(self, send: Any, content_type: str, parts: list[bytes]) -> None:
        headers = [(b"content-type", content_type.encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for part in parts:
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def serve_fake_openai(
    fake: FakeOpenAI, *, task_status: trio.TaskStatus[FakeOpenAI] = trio.TASK_STATUS_IGNORED
) -> None:
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None

    async def started(binds: list[str]) -> None:
        fake.url = binds[0] + "/v1"
        task_status.started(fake)

    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(
            lambda task_status: serve(
                fake,
                config,
                shutdown_trigger=trio.sleep_forever,
                task_status=task_status,
            )
        )
        await started(binds)
