"""A stateful loopback emulator of Black Forest Labs' Flux API.

`POST /v1/{model}` returns `{id, polling_url}`; the polling URL walks a script of
statuses and ends with `result.sample`, a signed URL this server also serves (a
real PNG of the requested size). Requests are recorded; faults are injected per test.
"""
from __future__ import annotations

import io
import random
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from tests.fakes.loopback import serve
from PIL import Image

from providers.local_render import prompt_colours, stable_seed

KEY = "bfl_test_key"
MODELS = {"flux-2-pro", "flux-2-max", "flux-2-flex"}


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    json: Any = None


@dataclass
class Task:
    id: str
    model: str
    body: dict[str, Any]
    script: list[str]
    polls: int = 0
    tokens: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        return self.script[min(max(self.polls, 1), len(self.script)) - 1]


class BflServer:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.tasks: dict[str, Task] = {}
        self.script = ["Pending", "Ready"]
        self.faults: list[list[Any]] = []
        self.expire_samples = False
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    def fail(self, method: str, prefix: str, status: int, *, times: int = 1) -> None:
        self.faults.append([method, prefix, status, times])

    def submits(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST" and r.path.startswith("/v1/")]

    async def start(self) -> BflServer:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_post("/v1/{model}", self._submit)
        app.router.add_get("/v1/get_result", self._result)
        app.router.add_get("/samples/{id}/{token}.png", self._sample)
        self._runner, port = await serve(app)
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.json() if request.can_read_body and request.content_type == "application/json" else None
        self.requests.append(Recorded(request.method, request.path_qs, dict(request.headers), body))
        for fault in self.faults:
            method, prefix, status, times = fault
            if times > 0 and method == request.method and request.path_qs.startswith(prefix):
                fault[3] -= 1
                return web.json_response({"detail": f"injected {status}"}, status=status, headers={"Retry-After": "0"})
        if request.path.startswith("/v1/") and request.headers.get("x-key") != KEY:
            return web.json_response({"detail": "Invalid API key"}, status=403)
        return await handler(request)

    async def _submit(self, request: web.Request) -> web.Response:
        model = request.match_info["model"]
        if model not in MODELS:
            return web.json_response({"detail": "Not Found"}, status=404)
        body = self.requests[-1].json or {}
        width, height = body.get("width"), body.get("height")
        if not body.get("prompt") or not isinstance(width, int) or not isinstance(height, int) or width % 16 or height % 16:
            return web.json_response({"detail": [{"msg": "prompt, width and height (multiples of 16) are required"}]}, status=422)
        task = Task(id=secrets.token_hex(8), model=model, body=body, script=list(self.script))
        self.tasks[task.id] = task
        return web.json_response({"id": task.id, "polling_url": f"{self.base_url}/v1/get_result?id={task.id}"})

    async def _result(self, request: web.Request) -> web.Response:
        task = self.tasks.get(request.query.get("id", ""))
        if task is None:
            return web.json_response({"id": request.query.get("id"), "status": "Task not found"})
        task.polls += 1
        status = task.status
        out: dict[str, Any] = {"id": task.id, "status": status}
        if status == "Pending":
            out["progress"] = 0.4
        if status == "Ready":
            token = secrets.token_hex(6)
            task.tokens.append(token)
            out["result"] = {"sample": f"{self.base_url}/samples/{task.id}/{token}.png", "prompt": task.body["prompt"]}
        return web.json_response(out)

    async def _sample(self, request: web.Request) -> web.Response:
        task = self.tasks.get(request.match_info["id"])
        if task is None or request.match_info["token"] not in task.tokens or self.expire_samples:
            return web.Response(status=403, text="<Error>Request has expired</Error>")
        width, height = task.body["width"], task.body["height"]
        colour = prompt_colours(task.body["prompt"], random.Random(stable_seed(task.body["prompt"], task.body.get("seed"))))[0]
        image = Image.new("RGB", (width, height), colour)
        out = io.BytesIO()
        image.save(out, "PNG")
        return web.Response(body=out.getvalue(), content_type="image/png")



@pytest.fixture
async def bfl_server() -> AsyncIterator[BflServer]:
    server = await BflServer().start()
    try:
        yield server
    finally:
        await server.stop()
