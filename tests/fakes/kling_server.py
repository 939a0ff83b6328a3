"""A stateful loopback emulator of Kling's API (api-singapore.klingai.com), on plain HTTP.

Every request must carry `Authorization: Bearer <JWT>` (HS256, `iss` = the access key, signed
with the secret key, with `exp` and `nbf`), checked with PyJWT as Kling does; a missing, bad,
not yet valid or expired token is a 401 with Kling's body (`code` 1001, 1002, 1003, 1004).

`POST /v1/videos/text2video | image2video | video-extend` creates a task (`external_task_id`
unique per account: a second create with the same one is refused with 1201) and answers
`{code: 0, data: {task_id, task_status: "submitted", task_info: {external_task_id}}}`.
`GET /v1/videos/{kind}/{task_id}` reads a task: `submitted`, then `processing` for `steps`
reads, then `succeed` with `task_result.videos[0]` (`id`, `url`, `duration`) served as a real
MP4, or `failed` with `task_status_msg`. `GET /v1/videos/{kind}?external_task_id=…` reads a
task by our id (404 code 1203 when there is none); without it, the account's tasks, newest first.

Inputs are checked against this emulator's own rules, written from Kling's API pages: model
names, modes, durations "5"/"10", aspect ratios, images as bare base64 of at least 300 px.
Prompts with "forbidden" are refused at create (1301); with "unsafe output" the task fails in
review. Faults (429 code 1302 with Retry-After, 5xx, ...) are injected per test.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import io
import itertools
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web

from tests.fakes.loopback import serve
from PIL import Image

from providers.local_render import render_clip
from providers.media import concat_videos, last_frame

ACCESS_KEY = "ak_test_kling"
SECRET_KEY = "sk_test_kling_secret_0123456789abcdef"
MODELS = {
    "kling-v1": {"std", "pro"}, "kling-v1-5": {"std", "pro"}, "kling-v1-6": {"std", "pro"},
    "kling-v2-master": {"pro"}, "kling-v2-1": {"std", "pro"}, "kling-v2-1-master": {"pro"},
    "kling-v2-5-turbo": {"std", "pro"}, "kling-v2-6": {"pro"},
}  # fmt: skip
EXTENDABLE = {"kling-v1", "kling-v1-5", "kling-v1-6"}
RATIOS = {"16:9": (16, 9), "9:16": (9, 16), "1:1": (1, 1)}
SHORT = {"std": 720, "pro": 1080}
#: Output frames are the video size divided by this (1280x720 -> 128x72): real MP4s, quick to make.
SCALE = 10
FPS = 8
EXTEND_SECONDS = 5

#: The parsed JSON body of a request, kept by the middleware for its handler.
BODY = web.RequestKey("body", object)

@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any = None
    claims: dict[str, Any] | None = None
    #: When it arrived (epoch seconds).
    at: float = field(default_factory=time.time)


@dataclass
class Fault:
    method: str
    prefix: str
    status: int
    code: int
    times: int
    headers: dict[str, str]
    #: Make the task, then answer the fault (the answer is lost on the way back).
    after: bool = False


@dataclass
class Task:
    id: str
    kind: str
    body: dict[str, Any]
    external_id: str | None
    created_at: int
    status: str = "submitted"
    reads: int = 0
    message: str | None = None
    video: Path | None = None
    video_id: str = field(default_factory=lambda: f"vid_{uuid.uuid4().hex[:12]}")
    image: Image.Image | None = None
    tail: Image.Image | None = None
    seconds: int = 5
    size: tuple[int, int] = (128, 72)
    source: Task | None = None

    def view(self, base_url: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "task_id": self.id, "task_status": self.status, "task_status_msg": self.message,
            "task_info": {"external_task_id": self.external_id} if self.external_id else {},
            "created_at": self.created_at, "updated_at": int(time.time() * 1000), "task_result": None,
        }  # fmt: skip
        if self.status == "succeed":
            out["task_result"] = {"videos": [{"id": self.video_id, "url": f"{base_url}/files/{self.id}.mp4", "duration": str(self.seconds)}]}
        return out


class KlingServer:
    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.requests: list[Recorded] = []
        self.tasks: dict[str, Task] = {}
        self.faults: list[Fault] = []
        #: Reads a processing task takes to finish.
        self.steps = 2
        #: When set, tasks stay `processing`.
        self.hold = False
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        self._ids = itertools.count(860_000_000_000_000_000)

    # --- control from tests --------------------------------------------------------------

    def fail(self, method: str, prefix: str, status: int, code: int, *, times: int = 1,
             headers: dict[str, str] | None = None, after: bool = False) -> None:  # fmt: skip
        """The next `times` requests matching method and path prefix answer `status` with Kling's `code`."""
        self.faults.append(Fault(method, prefix, status, code, times, headers or {}, after))

    def creates(self) -> list[Recorded]:
        """Create calls that reached the server (refused or not)."""
        return [r for r in self.requests if r.method == "POST"]

    def calls(self, method: str, prefix: str = "") -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path.startswith(prefix)]

    def by_external_id(self, external_id: str) -> Task | None:
        return next((t for t in self.tasks.values() if t.external_id == external_id), None)

    # --- life cycle ----------------------------------------------------------------------

    async def start(self) -> KlingServer:
        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[self._middleware])
        app.router.add_get("/files/{id}.mp4", self._file)
        app.router.add_post("/v1/videos/{kind}", self._create)
        app.router.add_get("/v1/videos/{kind}/{id}", self._read)
        app.router.add_get("/v1/videos/{kind}", self._query)
        self._runner, port = await serve(app)
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # --- plumbing ------------------------------------------------------------------------

    def _answer(self, status: int, code: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
        body = {"code": code, "message": message, "request_id": uuid.uuid4().hex}
        return web.json_response(body, status=status, headers=headers)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        parsed: Any = None
        if request.method == "POST":
            try:
                parsed = await request.json()
            except ValueError:
                parsed = None
        record = Recorded(request.method, request.path, dict(request.query), dict(request.headers), parsed)
        self.requests.append(record)
        request[BODY] = parsed
        if request.path.startswith("/files/"):
            return await handler(request)  # the CDN takes no token
        refused = self._check_token(request.headers.get("Authorization", ""), record)
        if refused is not None:
            return refused
        for fault in self.faults:
            if fault.times > 0 and fault.method == request.method and request.path.startswith(fault.prefix):
                fault.times -= 1
                if fault.after:
                    await handler(request)
                return self._answer(fault.status, fault.code, f"injected {fault.status}", fault.headers)
        return await handler(request)

    def _check_token(self, header: str, record: Recorded) -> web.Response | None:
        if not header:
            return self._answer(401, 1001, "Authorization is empty")
        scheme, _, token = header.partition(" ")
        if scheme != "Bearer" or not token:
            return self._answer(401, 1002, "Authorization is invalid")
        try:
            claims = jwt.decode(token, SECRET_KEY, algorithms=["HS256"], options={"require": ["iss", "exp", "nbf"]})
        except jwt.ExpiredSignatureError:
            return self._answer(401, 1004, "Authorization has expired")
        except jwt.ImmatureSignatureError:
            return self._answer(401, 1003, "Authorization is not yet valid")
        except jwt.InvalidTokenError:
            return self._answer(401, 1002, "Authorization is invalid")
        if claims.get("iss") != ACCESS_KEY:
            return self._answer(401, 1002, "Authorization is invalid")
        record.claims = claims
        return None

    # --- endpoints -----------------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        if kind not in ("text2video", "image2video", "video-extend"):
            return self._answer(404, 1202, "Invalid request method")
        body = request[BODY]
        if not isinstance(body, dict):
            return self._answer(400, 1200, "Invalid request parameters")
        external_id = body.get("external_task_id") or None
        if external_id is not None and self.by_external_id(str(external_id)) is not None:
            return self._answer(400, 1201, "external_task_id already exists")
        task = Task(id=str(next(self._ids)), kind=kind, body=body, external_id=external_id, created_at=int(time.time() * 1000))
        problem = self._shape(task)
        if problem:
            return self._answer(400, 1201, problem)
        prompt = str(body.get("prompt", "")).lower()
        if "forbidden" in prompt:
            return self._answer(400, 1301, "Trigger the content security policy")
        if "unsafe output" in prompt:
            task.message = "Failure to pass the risk control system"
        self.tasks[task.id] = task
        return web.json_response({"code": 0, "message": "SUCCEED", "request_id": uuid.uuid4().hex,
                                  "data": {k: v for k, v in task.view(self.base_url).items() if k in
                                           ("task_id", "task_status", "task_info", "created_at", "updated_at")}})  # fmt: skip

    def _shape(self, task: Task) -> str | None:
        """Why the body is not a valid create of its kind, and the output's size and length."""
        body = task.body
        if task.kind == "video-extend":
            source = next((t for t in self.tasks.values() if t.video_id == body.get("video_id") and t.status == "succeed"), None)
            if source is None:
                return "video_id is not a finished video of this account"
            if str(source.body.get("model_name")) not in EXTENDABLE:
                return f"video extension is not supported for {source.body.get('model_name')}"
            task.source, task.size, task.seconds = source, source.size, source.seconds + EXTEND_SECONDS
            return None
        model, mode = body.get("model_name", "kling-v1"), body.get("mode", "std")
        if model not in MODELS:
            return f"model_name {model!r} is invalid"
        if mode not in MODELS[model]:
            return f"mode {mode!r} is not supported by {model}"
        if str(body.get("duration", "5")) not in ("5", "10"):
            return "duration must be '5' or '10'"
        task.seconds = int(body.get("duration", "5"))
        if task.kind == "text2video":
            ratio = body.get("aspect_ratio", "16:9")
            if ratio not in RATIOS:
                return "aspect_ratio must be 16:9, 9:16 or 1:1"
            w, h = RATIOS[ratio]
            short = SHORT[mode]
            task.size = ((short * w // h) // SCALE, short // SCALE) if w >= h else (short // SCALE, (short * h // w) // SCALE)
            return None
        images = {}
        for name in ("image", "image_tail"):
            if name in body:
                image = _bare_base64_image(body[name])
                if image is None:
                    return f"{name} must be a URL or bare base64 (no data: prefix) of a JPG or PNG"
                if min(image.size) < 300:
                    return f"{name} must be at least 300x300 px"
                images[name] = image
        if not images:
            return "image or image_tail is required"
        if "image_tail" in images and task.seconds != 5:
            return "image_tail supports 5 s only"
        task.image, task.tail = images.get("image"), images.get("image_tail")
        width, height = (task.image or task.tail).size  # type: ignore[union-attr]
        task.size = (width // SCALE - (width // SCALE) % 2, height // SCALE - (height // SCALE) % 2)
        return None

    async def _read(self, request: web.Request) -> web.Response:
        task = self.tasks.get(request.match_info["id"])
        if task is None or task.kind != request.match_info["kind"]:
            return self._answer(404, 1203, "Resource does not exist")
        await self._advance(task)
        return self._task(task)

    async def _query(self, request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        external_id = request.query.get("external_task_id")
        if external_id is not None:
            task = self.by_external_id(external_id)
            if task is None or task.kind != kind:
                return self._answer(404, 1203, "Resource does not exist")
            await self._advance(task)
            return self._task(task)
        page, size = int(request.query.get("pageNum", "1")), int(request.query.get("pageSize", "30"))
        mine = sorted((t for t in self.tasks.values() if t.kind == kind), key=lambda t: t.created_at, reverse=True)
        data = [t.view(self.base_url) for t in mine[(page - 1) * size : page * size]]
        return web.json_response({"code": 0, "message": "SUCCEED", "request_id": uuid.uuid4().hex, "data": data})

    def _task(self, task: Task) -> web.Response:
        return web.json_response({"code": 0, "message": "SUCCEED", "request_id": uuid.uuid4().hex, "data": task.view(self.base_url)})

    async def _advance(self, task: Task) -> None:
        """Each read moves a task one step: submitted, processing for `steps` reads, then done."""
        if task.status in ("succeed", "failed") or self.hold and task.status == "processing":
            return
        task.reads += 1
        if task.status == "submitted":
            task.status = "processing"
            return
        if task.reads <= self.steps:
            return
        if task.message:
            task.status = "failed"
            return
        await self._render(task)
        task.status = "succeed"

    async def _render(self, task: Task) -> None:
        task.video = self.work_dir / f"kling-{task.id}.mp4"
        width, height = task.size
        prompt = str(task.body.get("prompt", "kling"))
        if task.source is not None:
            assert task.source.video is not None
            segment = self.work_dir / f"kling-{task.id}.segment.mp4"
            start = await asyncio.to_thread(last_frame, task.source.video)
            await asyncio.to_thread(render_clip, segment, prompt=prompt, seconds=EXTEND_SECONDS, width=width, height=height,
                                    fps=FPS, seed=None, base_image=start)  # fmt: skip
            await asyncio.to_thread(concat_videos, task.source.video, segment, task.video)
            return
        await asyncio.to_thread(render_clip, task.video, prompt=prompt, seconds=task.seconds, width=width, height=height,
                                fps=FPS, seed=None, base_image=task.image or task.tail)  # fmt: skip

    async def _file(self, request: web.Request) -> web.StreamResponse:
        task = self.tasks.get(request.match_info["id"])
        if task is None or task.video is None:
            return web.Response(status=404, text="Not Found")
        return web.FileResponse(task.video, headers={"Content-Type": "video/mp4"})


def _bare_base64_image(value: object) -> Image.Image | None:
    if not isinstance(value, str) or value.startswith("data:"):
        return None
    try:
        image = Image.open(io.BytesIO(base64.b64decode(value, validate=True)))
        image.load()
    except (binascii.Error, ValueError, OSError):
        return None
    return image.convert("RGB") if image.format in ("JPEG", "PNG") else None


def sent_image(record: Recorded, name: str = "image") -> Image.Image:
    """The image a create carried, decoded."""
    image = _bare_base64_image(record.json[name])
    assert image is not None, f"{name} is not bare base64 of an image"
    return image


_ids = itertools.count()


@pytest.fixture
async def kling_server(tmp_path: Path) -> AsyncIterator[KlingServer]:
    server = await KlingServer(tmp_path / f"kling-server-{next(_ids)}").start()
    server.work_dir.mkdir(parents=True, exist_ok=True)
    try:
        yield server
    finally:
        await server.stop()
