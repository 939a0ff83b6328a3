"""A stateful loopback emulator of fal's queue API (queue.fal.run), on plain HTTP.

`POST /{endpoint_id}` queues a request and answers `request_id` with its `status_url`,
`response_url` and `cancel_url` (under `/{owner}/{alias}/requests/{id}`, without the
endpoint's subpath, as fal does). Requests run `capacity` at a time in arrival order; the
rest wait with their `queue_position` (0 = next). Each status read of a running request
moves it one step (a log line with a percentage) until it is COMPLETED; its result is then
the model's output JSON with a `video.url` this server serves as a real MP4, or the model's
error: a 422 with typed `detail` entries (validation, content policy) or a request error
(`detail`, `error_type`). `PUT …/cancel` removes a queued request or stops a running one.

The input schemas below are this emulator's own, written from fal's model pages, not from
the bot's endpoint table, so a wrong row in that table shows up as a 422 here.
Every request is recorded; faults (401, 429 with Retry-After, 503...) are injected per test.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import io
import itertools
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.fakes.loopback import serve
from PIL import Image

from providers.local_render import render_clip

KEY = "fal_test_key:secret"
#: Output frames are the video size divided by this (1280x720 -> 128x72): real MP4s, quick to make.
SCALE = 10
FPS = 8

_KLING_T2V = {
    "required": {"prompt": str},
    "optional": {"duration": {"5", "10"}, "aspect_ratio": {"16:9", "9:16", "1:1"}, "negative_prompt": str, "cfg_scale": float},
}
_KLING_I2V = {
    "required": {"prompt": str, "image_url": "image"},
    "optional": {"duration": {"5", "10"}, "negative_prompt": str, "cfg_scale": float, "tail_image_url": "image"},
}
_VEO_T2V = {
    "required": {"prompt": str},
    "optional": {
        "duration": {"4s", "6s", "8s"}, "aspect_ratio": {"16:9", "9:16"}, "resolution": {"720p", "1080p"},
        "negative_prompt": str, "seed": int, "generate_audio": bool, "enhance_prompt": bool,
    },
}
_WAN_T2V = {
    "required": {"prompt": str},
    "optional": {
        "num_frames": range(17, 162), "frames_per_second": range(4, 61), "resolution": {"480p", "580p", "720p"},
        "aspect_ratio": {"16:9", "9:16", "1:1"}, "negative_prompt": str, "seed": int,
    },
}
SCHEMAS: dict[str, dict[str, dict[str, Any]]] = {
    "fal-ai/kling-video/v2.5-turbo/pro/text-to-video": _KLING_T2V,
    "fal-ai/kling-video/v2.5-turbo/pro/image-to-video": _KLING_I2V,
    "fal-ai/kling-video/v2.1/master/text-to-video": _KLING_T2V,
    "fal-ai/veo3.1": _VEO_T2V,
    "fal-ai/veo3.1/fast": _VEO_T2V,
    "fal-ai/wan/v2.2-a14b/text-to-video": _WAN_T2V,
}


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    query: dict[str, str]
    json: Any = None


@dataclass
class Fault:
    method: str
    prefix: str
    status: int
    times: int
    headers: dict[str, str]
    body: Any


@dataclass
class QueuedRequest:
    id: str
    endpoint: str
    app: str
    body: dict[str, Any]
    state: str = "IN_QUEUE"  # IN_QUEUE, IN_PROGRESS, COMPLETED
    steps: int = 0
    cancelled: bool = False
    #: (status, body, headers) of a failed result; None for a video.
    failure: tuple[int, Any, dict[str, str]] | None = None
    logs: list[dict[str, str]] = field(default_factory=list)
    video: Path | None = None
    image: Image.Image | None = None

    @property
    def done(self) -> bool:
        return self.state == "COMPLETED"


class FalServer:
    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.requests: list[Recorded] = []
        self.queue: dict[str, QueuedRequest] = {}
        self.faults: list[Fault] = []
        #: Requests that run at once; the others wait in line.
        self.capacity = 1
        #: Status reads a running request takes to complete.
        self.steps = 3
        #: When set, running requests make no progress (they stay IN_PROGRESS).
        self.hold = False
        #: Check inputs when a request is submitted (422 at once) instead of when it runs.
        self.validate_on_submit = False
        #: (status, body, headers) results for the next requests, one each.
        self.next_failures: list[tuple[int, Any, dict[str, str]]] = []
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # --- control from tests --------------------------------------------------------------

    def fail(self, method: str, prefix: str, status: int, *, times: int = 1,
             headers: dict[str, str] | None = None, body: Any = None) -> None:  # fmt: skip
        """The next `times` requests matching method and path prefix answer `status`."""
        self.faults.append(Fault(method, prefix, status, times, headers or {}, body))

    def submits(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST"]

    def calls(self, method: str, suffix: str = "") -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path.endswith(suffix)]

    # --- life cycle ----------------------------------------------------------------------

    async def start(self) -> FalServer:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/files/{id}.mp4", self._file)
        app.router.add_get(r"/{app:.+}/requests/{id}/status", self._status)
        app.router.add_put(r"/{app:.+}/requests/{id}/cancel", self._cancel)
        app.router.add_get(r"/{app:.+}/requests/{id}", self._result)
        app.router.add_post(r"/{endpoint:.+}", self._submit)
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
        parsed: Any = None
        if request.method == "POST":
            try:
                parsed = await request.json()
            except ValueError:
                parsed = None
        self.requests.append(Recorded(request.method, request.path, dict(request.headers), dict(request.query), parsed))
        for fault in self.faults:
            if fault.times > 0 and fault.method == request.method and request.path.startswith(fault.prefix):
                fault.times -= 1
                body = fault.body if fault.body is not None else {"detail": f"injected {fault.status}"}
                return web.json_response(body, status=fault.status, headers=fault.headers)
        if not request.path.startswith("/files/") and request.headers.get("Authorization") != f"Key {KEY}":
            return web.json_response({"detail": "No user found for Key ID and Secret"}, status=401)
        return await handler(request)

    def _urls(self, item: QueuedRequest) -> dict[str, str]:
        base = f"{self.base_url}/{item.app}/requests/{item.id}"
        return {"response_url": base, "status_url": f"{base}/status", "cancel_url": f"{base}/cancel"}

    def _lookup(self, request: web.Request) -> QueuedRequest | None:
        item = self.queue.get(request.match_info["id"])
        if item is None or item.app != request.match_info["app"]:
            return None
        return item

    def _waiting(self) -> list[QueuedRequest]:
        return [r for r in self.queue.values() if r.state == "IN_QUEUE" and not r.cancelled]

    def _schedule(self) -> None:
        """Start waiting requests, in arrival order, while there is capacity."""
        running = sum(1 for r in self.queue.values() if r.state == "IN_PROGRESS")
        for item in self._waiting():
            if running >= self.capacity:
                break
            item.state = "IN_PROGRESS"
            item.logs.append({"message": "Starting generation", "level": "INFO", "timestamp": "2026-11-01T00:00:00Z"})
            running += 1

    # --- endpoints -----------------------------------------------------------------------

    async def _submit(self, request: web.Request) -> web.Response:
        endpoint = request.match_info["endpoint"]
        schema = SCHEMAS.get(endpoint)
        if schema is None:
            return web.json_response({"detail": f"Application '{endpoint}' not found"}, status=404)
        body = self.requests[-1].json
        if not isinstance(body, dict):
            return web.json_response({"detail": "Body must be a JSON object"}, status=400)
        if self.validate_on_submit and (errors := _validate(body, schema)):
            return web.json_response({"detail": errors}, status=422)
        parts = endpoint.split("/")
        item = QueuedRequest(id=str(uuid.uuid4()), endpoint=endpoint, app="/".join(parts[:2]), body=body)
        if self.next_failures:
            item.failure = self.next_failures.pop(0)
        elif errors := _validate(body, schema):
            item.failure = (422, {"detail": errors}, {})
        elif "forbidden" in str(body.get("prompt", "")).lower():
            item.failure = (422, {"detail": [{
                "loc": ["body", "prompt"], "msg": "The content was flagged by a content checker.",
                "type": "content_policy_violation", "url": "https://docs.fal.ai/errors#content_policy_violation",
            }]}, {})  # fmt: skip
        else:
            item.image = _image_of(body)
        self.queue[item.id] = item
        position = len(self._waiting()) - 1
        self._schedule()
        out = {"status": "IN_QUEUE", "request_id": item.id, "queue_position": max(position, 0), **self._urls(item)}
        return web.json_response(out, headers={"x-fal-request-id": item.id})

    async def _status(self, request: web.Request) -> web.Response:
        item = self._lookup(request)
        if item is None:
            return web.json_response({"detail": "Request not found"}, status=404)
        self._schedule()
        if item.state == "IN_PROGRESS" and not self.hold and not item.cancelled:
            item.steps += 1
            percent = min(100, int(100 * item.steps / (self.steps + 1)))
            item.logs.append({"message": f"Generating video: {percent}%", "level": "INFO", "timestamp": "2026-11-01T00:00:01Z"})
            if item.steps > self.steps:
                item.state = "COMPLETED"
                self._schedule()
        logs = item.logs if request.query.get("logs") in ("1", "true", "True") else None
        out: dict[str, Any] = {"status": item.state, **self._urls(item)}
        if item.state == "IN_QUEUE":
            out["queue_position"] = self._waiting().index(item)
        else:
            out["logs"] = logs
        if item.state == "COMPLETED":
            out["metrics"] = {"inference_time": 1.5}
            if item.cancelled:
                out["error"], out["error_type"] = "Request was cancelled", "request_cancelled"
        return web.json_response(out)

    async def _result(self, request: web.Request) -> web.Response:
        item = self._lookup(request)
        if item is None:
            return web.json_response({"detail": "Request not found"}, status=404)
        if not item.done:
            return web.json_response({"detail": "Request is still in progress"}, status=400)
        if item.cancelled:
            return web.json_response({"detail": "Request was cancelled", "error_type": "request_cancelled"}, status=400)
        if item.failure is not None:
            status, body, headers = item.failure
            return web.json_response(body, status=status, headers=headers)
        if item.video is None:
            item.video = self.work_dir / f"fal-{item.id}.mp4"
            width, height, seconds = _output_shape(item)
            await asyncio.to_thread(
                render_clip, item.video, prompt=str(item.body.get("prompt", "fal")), seconds=seconds,
                width=width, height=height, fps=FPS, seed=item.body.get("seed"), base_image=item.image,
            )  # fmt: skip
        video = {"url": f"{self.base_url}/files/{item.id}.mp4", "content_type": "video/mp4",
                 "file_name": "output.mp4", "file_size": item.video.stat().st_size}  # fmt: skip
        return web.json_response({"video": video, "seed": item.body.get("seed", 42)})

    async def _cancel(self, request: web.Request) -> web.Response:
        item = self._lookup(request)
        if item is None:
            return web.json_response({"status": "NOT_FOUND"}, status=404)
        if item.done:
            return web.json_response({"status": "ALREADY_COMPLETED"}, status=400)
        item.cancelled = True
        item.state = "COMPLETED"  # a queued one leaves the line; a running one is told to stop
        self._schedule()
        return web.json_response({"status": "CANCELLATION_REQUESTED"}, status=202)

    async def _file(self, request: web.Request) -> web.StreamResponse:
        item = self.queue.get(request.match_info["id"])
        if item is None or item.video is None:
            return web.Response(status=404, text="Not Found")
        return web.FileResponse(item.video, headers={"Content-Type": "video/mp4"})


# --- input checks and outputs -------------------------------------------------------------------


def _validate(body: dict[str, Any], schema: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """FastAPI/pydantic-style errors, one per bad field; unknown fields are ignored like fal's apps."""
    errors: list[dict[str, Any]] = []
    for name, kind in schema["required"].items():
        if name not in body:
            errors.append({"loc": ["body", name], "msg": "Field required", "type": "missing"})
        elif (problem := _check(body[name], kind)) is not None:
            errors.append({"loc": ["body", name], "msg": problem, "type": "value_error", "input": str(body[name])[:50]})
    for name, kind in schema["optional"].items():
        if name in body and (problem := _check(body[name], kind)) is not None:
            errors.append({"loc": ["body", name], "msg": problem, "type": "value_error", "input": str(body[name])[:50]})
    return errors


def _check(value: Any, kind: Any) -> str | None:
    if kind == "image":
        return None if isinstance(value, str) and _decode_data_uri(value) is not None else "Input should be an image URL or data URI"
    if isinstance(kind, set):
        return None if value in kind else "Input should be " + " or ".join(repr(v) for v in sorted(kind))
    if isinstance(kind, range):
        ok = isinstance(value, int) and not isinstance(value, bool) and value in kind
        return None if ok else f"Input should be between {kind.start} and {kind.stop - 1}"
    if kind is float:
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "Input should be a number"
    if kind is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "Input should be an integer"
    return None if isinstance(value, kind) else f"Input should be a valid {kind.__name__}"


def _decode_data_uri(uri: str) -> Image.Image | None:
    header, _, payload = uri.partition(",")
    if not header.startswith("data:image/") or not header.endswith(";base64"):
        return None
    try:
        image = Image.open(io.BytesIO(base64.b64decode(payload, validate=True)))
        image.load()
    except (binascii.Error, ValueError, OSError):
        return None
    return image.convert("RGB")


def _image_of(body: dict[str, Any]) -> Image.Image | None:
    value = body.get("image_url")
    return _decode_data_uri(value) if isinstance(value, str) else None


def _output_shape(item: QueuedRequest) -> tuple[int, int, int]:
    """(width, height, seconds) of the clip a request asked for, divided by SCALE."""
    body = item.body
    short = int(re.match(r"\d+", str(body.get("resolution", "720p"))).group(0))  # type: ignore[union-attr]
    ratio = str(body.get("aspect_ratio", "auto"))
    if ratio == "auto" or ":" not in ratio:
        ratio = f"{item.image.width}:{item.image.height}" if item.image is not None else "16:9"
    w, h = (int(v) for v in ratio.split(":"))
    width, height = (short * w / h, short) if w >= h else (short, short * h / w)
    width, height = int(width / SCALE), int(height / SCALE)
    if "num_frames" in body:
        seconds = round((int(body["num_frames"]) - 1) / int(body.get("frames_per_second", 16)))
    else:
        seconds = int(str(body.get("duration", "5")).rstrip("s"))
    return width - width % 2, height - height % 2, seconds


_ids = itertools.count()


@pytest.fixture
async def fal_server(tmp_path: Path) -> AsyncIterator[FalServer]:
    server = await FalServer(tmp_path / f"fal-server-{next(_ids)}").start()
    server.work_dir.mkdir(parents=True, exist_ok=True)
    try:
        yield server
    finally:
        await server.stop()
