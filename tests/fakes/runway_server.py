"""A stateful loopback emulator of Runway's developer API, for the real `runwayml` SDK.

Serves `/v1/image_to_video`, `/v1/text_to_video`, `/v1/tasks/{id}` (GET, DELETE),
`/v1/uploads` plus the upload target, and the task outputs as real tiny MP4s.
Checks the `X-Runway-Version` header and the Bearer key like the API does.
Every request is recorded for assertions; faults are injected per test.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import io
import itertools
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.fakes.loopback import serve
from PIL import Image

from providers.local_render import render_clip

VERSION = "2024-11-06"
SECRET = "key_test_runway"
GEN4_RATIOS = {"1280:720", "720:1280", "1104:832", "832:1104", "960:960", "1584:672"}
TEXT_MODELS = {"gen4.5": {"1280:720", "720:1280"}, "veo3.1": {"1280:720", "720:1280"}, "veo3.1_fast": {"1280:720", "720:1280"}}
IMAGE_MODELS = {"gen4.5": GEN4_RATIOS, "gen4_turbo": GEN4_RATIOS, "veo3.1": {"1280:720", "720:1280"}, "veo3.1_fast": {"1280:720", "720:1280"}}
RETIRED = {"gen3a_turbo"}
CREDITS_PER_SECOND = {"gen4_turbo": 5, "gen4.5": 12, "veo3.1": 40, "veo3.1_fast": 15}
MAX_DATA_URI = 5 * 1024 * 1024
#: Output frames are the ratio divided by this (1280:720 -> 128x72): real MP4s, quick to make.
SCALE = 10
FPS = 8


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    json: Any = None
    body: bytes = b""


@dataclass
class Task:
    id: str
    endpoint: str
    body: dict[str, Any]
    #: Statuses the next GETs walk through; the last one stays.
    script: list[str]
    failure_code: str | None = None
    cancelled: bool = False
    gets: int = 0
    video: Path | None = None
    tokens: list[str] = field(default_factory=list)
    image: Image.Image | None = None

    @property
    def status(self) -> str:
        if self.cancelled:
            return "CANCELLED"
        return self.script[min(self.gets, len(self.script)) - 1] if self.gets else self.script[0]

    @property
    def credits(self) -> int:
        return int(CREDITS_PER_SECOND.get(self.body["model"], 40) * int(self.body.get("duration", 5)))


@dataclass
class Fault:
    method: str
    prefix: str
    status: int
    times: int
    body: dict[str, Any] | None = None


class RunwayServer:
    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.requests: list[Recorded] = []
        self.tasks: dict[str, Task] = {}
        self.uploads: dict[str, bytes] = {}
        self.faults: list[Fault] = []
        #: Statuses for tasks created from now on.
        self.script = ["PENDING", "RUNNING", "SUCCEEDED"]
        self.failure_code: str | None = None
        #: (script, failure code) for the next tasks, one each, before `script` applies again.
        self.next_tasks: list[tuple[list[str], str | None]] = []
        #: When set, the first output URL of each task is already expired.
        self.expire_first_output = False
        self._expired: set[str] = set()
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # --- control from tests --------------------------------------------------------------

    def fail(self, method: str, prefix: str, status: int, *, times: int = 1, body: dict[str, Any] | None = None) -> None:
        """The next `times` requests matching method and path prefix answer `status`."""
        self.faults.append(Fault(method, prefix, status, times, body))

    def creates(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST" and r.path in ("/v1/image_to_video", "/v1/text_to_video")]

    def calls(self, method: str, prefix: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path.startswith(prefix)]

    # --- life cycle ----------------------------------------------------------------------

    async def start(self) -> RunwayServer:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/image_to_video", self._image_to_video)
        app.router.add_post("/v1/text_to_video", self._text_to_video)
        app.router.add_get("/v1/tasks/{id}", self._get_task)
        app.router.add_get("/v1/organization", self._organization)
        app.router.add_delete("/v1/tasks/{id}", self._delete_task)
        app.router.add_post("/v1/uploads", self._create_upload)
        app.router.add_post("/upload/{id}", self._receive_upload)
        app.router.add_get("/outputs/{id}/{token}.mp4", self._output)
        app.middlewares.append(self._middleware)
        self._runner, port = await serve(app)
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # --- plumbing ------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.read()
        parsed: Any = None
        if request.content_type == "application/json" and body:
            parsed = await request.json()
        self.requests.append(Recorded(request.method, request.path, dict(request.headers), parsed, body))
        for fault in self.faults:
            if fault.times > 0 and fault.method == request.method and request.path.startswith(fault.prefix):
                fault.times -= 1
                headers = {"Retry-After": "0"} if fault.status == 429 else {}
                return _json(fault.body or {"error": f"injected {fault.status}"}, fault.status, headers)
        if request.path.startswith("/v1/"):
            if request.headers.get("X-Runway-Version") != VERSION:
                return _json({"error": "Missing or unsupported X-Runway-Version header."}, 400)
            if request.headers.get("Authorization") != f"Bearer {SECRET}":
                return _json({"error": "Invalid API key."}, 401)
        return await handler(request)

    async def _organization(self, request: web.Request) -> web.Response:
        """GET /v1/organization (auth checked by the middleware): credits and tier, as Runway answers."""
        return _json({"creditBalance": 10_000, "tier": {"maxMonthlyCreditSpend": 100_000, "models": {}}, "usage": {"models": {}}}, 200)

    def _check_common(self, body: dict[str, Any], models: dict[str, set[str]]) -> web.Response | None:
        model = body.get("model")
        if model in RETIRED:
            return _json({"error": f"Model {model} has been retired."}, 400)
        if model not in models:
            return _json({"error": f"Validation of body failed: model {model!r} is not supported here."}, 400)
        if body.get("ratio") not in models[model]:
            return _json({"error": f"Invalid ratio {body.get('ratio')!r} for {model}."}, 400)
        duration = body.get("duration")
        allowed = {4, 6, 8} if str(model).startswith("veo") else set(range(2, 11))
        if duration not in allowed:
            return _json({"error": f"Invalid duration {duration!r} for {model}."}, 400)
        text = body.get("promptText")
        if text is not None and not 0 < len(text) <= 1000:
            return _json({"error": "promptText must be 1 to 1000 characters."}, 400)
        return None

    def _new_task(self, endpoint: str, body: dict[str, Any], image: Image.Image | None = None) -> web.Response:
        script, failure = self.next_tasks.pop(0) if self.next_tasks else (list(self.script), self.failure_code)
        task = Task(id=secrets.token_hex(8), endpoint=endpoint, body=body, script=script, failure_code=failure, image=image)
        self.tasks[task.id] = task
        return _json({"id": task.id})

    # --- endpoints -----------------------------------------------------------------------

    async def _image_to_video(self, request: web.Request) -> web.Response:
        body = await request.json()
        if (error := self._check_common(body, IMAGE_MODELS)) is not None:
            return error
        prompt_image = body.get("promptImage")
        if not isinstance(prompt_image, str):
            return _json({"error": "promptImage is required."}, 400)
        if prompt_image.startswith("data:"):
            if len(prompt_image) > MAX_DATA_URI:
                return _json({"error": "promptImage data URI is larger than 5MB."}, 400)
            data = _data_uri_bytes(prompt_image)
        elif prompt_image.startswith("runway://"):
            data = self.uploads.get(prompt_image.removeprefix("runway://uploads/"))
        else:
            return _json({"error": "promptImage must be a data URI or runway:// upload in this emulator."}, 400)
        try:
            image = Image.open(io.BytesIO(data or b""))
            image.load()
        except Exception:
            return _json({"error": "promptImage is not a readable image."}, 400)
        return self._new_task("image_to_video", body, image)

    async def _text_to_video(self, request: web.Request) -> web.Response:
        body = await request.json()
        if not body.get("promptText"):
            return _json({"error": "promptText is required."}, 400)
        if (error := self._check_common(body, TEXT_MODELS)) is not None:
            return error
        return self._new_task("text_to_video", body)

    async def _get_task(self, request: web.Request) -> web.Response:
        task = self.tasks.get(request.match_info["id"])
        if task is None:
            return _json({"error": "Task not found."}, 404)
        task.gets += 1
        status = task.status
        out: dict[str, Any] = {"id": task.id, "status": status, "createdAt": "2026-11-01T00:00:00.000Z"}
        if status in ("PENDING", "THROTTLED", "RUNNING"):
            out["estimatedCost"] = {"credits": task.credits}
        if status == "RUNNING":
            out["progress"] = 0.5
        if status == "SUCCEEDED":
            out["cost"] = {"credits": task.credits}
            out["output"] = [await self._output_url(task)]
        if status == "FAILED":
            out["cost"] = {"credits": 0}
            out["failure"] = "The generation failed." if not (task.failure_code or "").startswith("SAFETY") else "The input did not pass moderation."
            out["failureCode"] = task.failure_code or "INTERNAL.BAD_OUTPUT.CODE01"
        if status == "CANCELLED":
            out["cost"] = {"credits": 0}
        return _json(out)

    async def _delete_task(self, request: web.Request) -> web.Response:
        task = self.tasks.get(request.match_info["id"])
        if task is None:
            return _json({"error": "Task not found."}, 404)
        task.cancelled = True
        return web.Response(status=204)

    async def _create_upload(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("type") != "ephemeral" or not body.get("filename"):
            return _json({"error": "filename and type=ephemeral are required."}, 400)
        upload_id = secrets.token_hex(6)
        return _json({
            "uploadUrl": f"{self.base_url}/upload/{upload_id}",
            "fields": {"key": f"uploads/{upload_id}", "policy": "test"},
            "runwayUri": f"runway://uploads/{upload_id}",
        })  # fmt: skip

    async def _receive_upload(self, request: web.Request) -> web.Response:
        # The middleware already read the body; parse the multipart from those bytes.
        recorded = self.requests[-1]
        data = _multipart_file(recorded.body, request.headers.get("Content-Type", ""))
        if data is None:
            return _json({"error": "no file"}, 400)
        self.uploads[request.match_info["id"]] = data
        return web.Response(status=204)

    async def _output(self, request: web.Request) -> web.StreamResponse:
        task = self.tasks.get(request.match_info["id"])
        token = request.match_info["token"]
        if task is None or token not in task.tokens or token in self._expired:
            return web.Response(status=403, text="<Error>Request has expired</Error>", content_type="application/xml")
        assert task.video is not None
        return web.FileResponse(task.video, headers={"Content-Type": "video/mp4"})

    async def _output_url(self, task: Task) -> str:
        if task.video is None:
            task.video = self.work_dir / f"runway-{task.id}.mp4"
            width, height = (int(v) // SCALE for v in task.body["ratio"].split(":"))
            width, height = width - width % 2, height - height % 2
            await asyncio.to_thread(
                render_clip, task.video, prompt=task.body.get("promptText") or "runway", seconds=int(task.body["duration"]),
                width=width, height=height, fps=FPS, seed=task.body.get("seed"),
                base_image=task.image,
            )  # fmt: skip
        token = secrets.token_hex(6)
        if self.expire_first_output and not task.tokens:
            self._expired.add(token)
        task.tokens.append(token)
        return f"{self.base_url}/outputs/{task.id}/{token}.mp4"


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers)


def _data_uri_bytes(uri: str) -> bytes | None:
    header, _, payload = uri.partition(",")
    if not header.endswith(";base64"):
        return None
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return None


def _multipart_file(body: bytes, content_type: str) -> bytes | None:
    marker = "boundary="
    if marker not in content_type:
        return None
    boundary = content_type.split(marker, 1)[1].strip('"').encode()
    for part in body.split(b"--" + boundary):
        head, sep, rest = part.partition(b"\r\n\r\n")
        if sep and b'name="file"' in head:
            return rest.rsplit(b"\r\n", 1)[0]
    return None


_ids = itertools.count()


@pytest.fixture
async def runway_server(tmp_path: Path) -> AsyncIterator[RunwayServer]:
    server = await RunwayServer(tmp_path / f"runway-server-{next(_ids)}").start()
    server.work_dir.mkdir(parents=True, exist_ok=True)
    try:
        yield server
    finally:
        await server.stop()
