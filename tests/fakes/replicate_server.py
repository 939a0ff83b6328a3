"""A stateful loopback emulator of Replicate's HTTP API (api.replicate.com), for the real
`replicate` client.

`GET /v1/models/{owner}/{name}` answers the model with `latest_version.openapi_schema` (a Cog
schema whose `Input` uses `allOf` references for enums, as Cog writes them), and
`/versions/{id}` one version. `POST /v1/models/{owner}/{name}/predictions` (or
`POST /v1/predictions` with `version`) checks the input against that schema (422 `Input
validation failed` with `invalid_fields`) and starts a prediction; each `GET
/v1/predictions/{id}` moves it: `starting`, then `processing` (tqdm-style logs) for `steps`
reads, then `succeeded` with `output` a URL served as a real MP4, or `failed` with `error`.
`POST /v1/predictions/{id}/cancel` cancels; `GET /v1/predictions` lists the account's
predictions newest first in pages (`next` cursor). Errors are RFC 7807 bodies (`title`,
`detail`, `status`); 401 without the right bearer token. Prompts with "forbidden" fail in the
safety check (E005). Outputs can be expired per test (Replicate deletes them after an hour).

The schemas are this emulator's own, written from the models' Replicate pages, not from the
bot's catalogue, so a wrong catalogue row shows up as a refusal here.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import io
import itertools
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.fakes.loopback import serve
from PIL import Image

from providers.local_render import render_clip

TOKEN = "r8_test_replicate_token"
#: Output frames are the video size divided by this (1280x720 -> 128x72): real MP4s, quick to make.
SCALE = 10
FPS = 8


def _enum(name: str, values: list[Any], kind: str) -> dict[str, Any]:
    return {name: {"title": name, "description": "An enumeration.", "enum": values, "type": kind}}


def _cog(properties: dict[str, Any], required: list[str], enums: dict[str, Any]) -> dict[str, Any]:
    return {
        "openapi": "3.0.2", "info": {"title": "Cog", "version": "0.1.0"},
        "components": {"schemas": {"Input": {"type": "object", "title": "Input", "required": required, "properties": properties},
                                   "Output": {"type": "string", "title": "Output", "format": "uri"}, **enums}},
    }  # fmt: skip


def _ref(name: str, order: int, default: Any) -> dict[str, Any]:
    return {"allOf": [{"$ref": f"#/components/schemas/{name}"}], "default": default, "x-order": order}


#: Text-to-image models: their output is a list of image URLs.
IMAGE_SIZES = {"1:1": (1024, 1024), "16:9": (1344, 768), "9:16": (768, 1344), "3:2": (1216, 832), "2:3": (832, 1216)}
WAN_SIZES = ["832*480", "480*832", "1280*720", "720*1280", "1920*1080", "1080*1920"]
SCHEMAS: dict[str, dict[str, Any]] = {
    "wan-video/wan-2.5-t2v": _cog(
        {
            "prompt": {"type": "string", "title": "Prompt", "x-order": 0},
            "duration": _ref("duration", 1, 5),
            "size": _ref("size", 2, "1280*720"),
            "negative_prompt": {"type": "string", "default": "", "x-order": 3},
            "seed": {"type": "integer", "x-order": 4},
            "audio": {"type": "string", "format": "uri", "x-order": 5},
            "enable_prompt_expansion": {"type": "boolean", "default": True, "x-order": 6},
        },
        ["prompt"], {**_enum("duration", [5, 10], "integer"), **_enum("size", WAN_SIZES, "string")},
    ),
    "wan-video/wan-2.5-i2v": _cog(
        {
            "image": {"type": "string", "format": "uri", "x-order": 0},
            "prompt": {"type": "string", "x-order": 1},
            "duration": _ref("duration", 2, 5),
            "resolution": _ref("resolution", 3, "720p"),
            "negative_prompt": {"type": "string", "default": "", "x-order": 4},
            "seed": {"type": "integer", "x-order": 5},
            "enable_prompt_expansion": {"type": "boolean", "default": True, "x-order": 6},
        },
        ["image", "prompt"], {**_enum("duration", [5, 10], "integer"), **_enum("resolution", ["480p", "720p", "1080p"], "string")},
    ),
    "lightricks/ltx-video": _cog(
        {
            "prompt": {"type": "string", "x-order": 0},
            "negative_prompt": {"type": "string", "x-order": 1},
            "image": {"type": "string", "format": "uri", "x-order": 2},
            "aspect_ratio": _ref("aspect_ratio", 3, "3:2"),
            "length": _ref("length", 4, 97),
            "target_size": _ref("target_size", 5, 640),
            "cfg": {"type": "number", "default": 3, "minimum": 1, "maximum": 20, "x-order": 6},
            "steps": {"type": "integer", "default": 30, "minimum": 1, "maximum": 50, "x-order": 7},
            "seed": {"type": "integer", "x-order": 8},
        },
        ["prompt"],
        {
            **_enum("aspect_ratio", ["1:1", "1:4", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "9:16", "9:21"], "string"),
            **_enum("length", [97, 129, 161, 193, 225, 257], "integer"),
            **_enum("target_size", [512, 576, 640, 704, 768, 832, 896, 960, 1024], "integer"),
        },
    ),
    "tencent/hunyuan-video": _cog(
        {
            "prompt": {"type": "string", "x-order": 0},
            "width": {"type": "integer", "default": 864, "minimum": 16, "maximum": 1280, "x-order": 1},
            "height": {"type": "integer", "default": 480, "minimum": 16, "maximum": 1280, "x-order": 2},
            "video_length": {"type": "integer", "default": 129, "minimum": 1, "maximum": 200, "x-order": 3},
            "infer_steps": {"type": "integer", "default": 50, "minimum": 1, "x-order": 4},
            "fps": {"type": "integer", "default": 24, "minimum": 1, "x-order": 5},
            "seed": {"type": "integer", "x-order": 6},
        },
        [], {},
    ),
    "black-forest-labs/flux-schnell": _cog(
        {
            "prompt": {"type": "string", "x-order": 0},
            "aspect_ratio": _ref("aspect_ratio", 1, "1:1"),
            "num_outputs": {"type": "integer", "default": 1, "minimum": 1, "maximum": 4, "x-order": 2},
            "seed": {"type": "integer", "x-order": 3},
            "output_format": _ref("output_format", 4, "webp"),
            "go_fast": {"type": "boolean", "default": True, "x-order": 5},
        },
        ["prompt"],
        {
            **_enum("aspect_ratio", ["1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21"], "string"),
            **_enum("output_format", ["webp", "jpg", "png"], "string"),
        },
    ),
    # An upscaler: no prompt and no image input, so the bot cannot drive it.
    "acme/video-upscaler": _cog({"video": {"type": "string", "format": "uri", "x-order": 0}}, ["video"], {}),
}

#: The parsed JSON body of a request, kept by the middleware for its handler.
BODY = web.RequestKey("body", object)

@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any = None
    at: float = field(default_factory=time.time)


@dataclass
class Fault:
    method: str
    prefix: str
    status: int
    times: int
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Prediction:
    id: str
    model: str
    version: str
    input: dict[str, Any]
    created_at: float
    status: str = "starting"
    reads: int = 0
    logs: str = ""
    error: str | None = None
    video: Path | None = None
    image: Image.Image | None = None
    #: The still an image model made.
    still: Path | None = None
    expired: bool = False
    completed_at: float | None = None

    def view(self, base_url: str) -> dict[str, Any]:
        done = self.status in ("succeeded", "failed", "canceled")
        return {
            "id": self.id, "model": self.model, "version": self.version, "input": self.input, "logs": self.logs,
            "output": self._output(base_url) if self.status == "succeeded" else None,
            "data_removed": self.expired, "error": self.error, "status": self.status, "source": "api",
            "created_at": _iso(self.created_at), "started_at": _iso(self.created_at) if self.status != "starting" else None,
            "completed_at": _iso(self.completed_at) if done and self.completed_at else None,
            "urls": {"get": f"{base_url}/v1/predictions/{self.id}", "cancel": f"{base_url}/v1/predictions/{self.id}/cancel",
                     "web": f"https://replicate.com/p/{self.id}"},
            "metrics": {"predict_time": 1.5} if done else {},
        }  # fmt: skip


    def _output(self, base_url: str) -> Any:
        if self.model in IMAGE_MODELS:
            return [f"{base_url}/files/{self.id}.{self.input.get('output_format', 'webp')}"]
        return f"{base_url}/files/{self.id}.mp4"


IMAGE_MODELS = {"black-forest-labs/flux-schnell"}


class ReplicateServer:
    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.requests: list[Recorded] = []
        self.predictions: dict[str, Prediction] = {}
        self.faults: list[Fault] = []
        self.schemas = copy.deepcopy(SCHEMAS)
        self.versions = {model: secrets.token_hex(32) for model in self.schemas}
        #: Reads a processing prediction takes to finish.
        self.steps = 2
        #: When set, predictions stay `processing`.
        self.hold = False
        #: Predictions per page of the list.
        self.page_size = 3
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # --- control from tests --------------------------------------------------------------

    def fail(self, method: str, prefix: str, status: int, *, times: int = 1, headers: dict[str, str] | None = None,
             detail: str | None = None) -> None:  # fmt: skip
        title = {429: "Too Many Requests", 503: "Service Unavailable"}.get(status, "Error")
        body = {"title": title, "detail": detail or f"injected {status}", "status": status}
        self.faults.append(Fault(method, prefix, status, times, headers or {}, body))

    def creates(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST" and r.path.endswith("/predictions")]

    def calls(self, method: str, prefix: str = "") -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path.startswith(prefix)]

    def add_prediction(self, model: str, input: dict[str, Any], *, created_at: float | None = None) -> Prediction:
        """A prediction made outside the bot (another client of the same account)."""
        p = Prediction(id=_prediction_id(), model=model, version=self.versions[model], input=input,
                       created_at=created_at or time.time())  # fmt: skip
        self.predictions[p.id] = p
        return p

    # --- life cycle ----------------------------------------------------------------------

    async def start(self) -> ReplicateServer:
        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[self._middleware])
        app.router.add_get("/files/{id}.mp4", self._file)
        app.router.add_get("/files/{id}.{ext}", self._still)
        app.router.add_get("/v1/models/{owner}/{name}", self._model)
        app.router.add_get("/v1/models/{owner}/{name}/versions/{version}", self._version)
        app.router.add_post("/v1/models/{owner}/{name}/predictions", self._create_for_model)
        app.router.add_post("/v1/predictions", self._create_for_version)
        app.router.add_get("/v1/predictions", self._list)
        app.router.add_get("/v1/predictions/{id}", self._get)
        app.router.add_post("/v1/predictions/{id}/cancel", self._cancel)
        self._runner, port = await serve(app)
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # --- plumbing ------------------------------------------------------------------------

    @staticmethod
    def _problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None, **extra: Any) -> web.Response:
        return web.json_response({"title": title, "detail": detail, "status": status, **extra}, status=status,
                                 headers=headers, content_type="application/problem+json")  # fmt: skip

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        parsed: Any = None
        if request.method == "POST" and request.can_read_body:
            try:
                parsed = await request.json()
            except ValueError:
                parsed = None
        self.requests.append(Recorded(request.method, request.path, dict(request.query), dict(request.headers), parsed))
        request[BODY] = parsed
        if request.path.startswith("/files/"):
            return await handler(request)  # delivery URLs take no token
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._problem(401, "Unauthenticated", "You did not pass a valid authentication token")
        for fault in self.faults:
            if fault.times > 0 and fault.method == request.method and request.path.startswith(fault.prefix):
                fault.times -= 1
                return web.json_response(fault.body, status=fault.status, headers=fault.headers)
        return await handler(request)

    def _model_json(self, model: str) -> dict[str, Any]:
        owner, name = model.split("/")
        return {
            "url": f"https://replicate.com/{model}", "owner": owner, "name": name, "description": f"{name} (emulated)",
            "visibility": "public", "github_url": None, "paper_url": None, "license_url": None, "run_count": 1234,
            "cover_image_url": None, "default_example": None,
            "latest_version": self._version_json(model),
        }  # fmt: skip

    def _version_json(self, model: str) -> dict[str, Any]:
        return {"id": self.versions[model], "created_at": "2026-10-01T00:00:00.000000Z", "cog_version": "0.16.8",
                "openapi_schema": self.schemas[model]}  # fmt: skip

    def _not_found(self) -> web.Response:
        return self._problem(404, "Not found", "The requested resource could not be found.")

    # --- endpoints -----------------------------------------------------------------------

    async def _model(self, request: web.Request) -> web.Response:
        model = f"{request.match_info['owner']}/{request.match_info['name']}"
        return web.json_response(self._model_json(model)) if model in self.schemas else self._not_found()

    async def _version(self, request: web.Request) -> web.Response:
        model = f"{request.match_info['owner']}/{request.match_info['name']}"
        if model not in self.schemas or self.versions[model] != request.match_info["version"]:
            return self._not_found()
        return web.json_response(self._version_json(model))

    async def _create_for_model(self, request: web.Request) -> web.Response:
        model = f"{request.match_info['owner']}/{request.match_info['name']}"
        if model not in self.schemas:
            return self._not_found()
        return self._create(model, request[BODY])

    async def _create_for_version(self, request: web.Request) -> web.Response:
        body = request[BODY] or {}
        model = next((m for m, v in self.versions.items() if v == body.get("version")), None)
        if model is None:
            return self._problem(422, "Invalid version or not permitted", "The specified version does not exist (or perhaps you don't have permission to use it?)")
        return self._create(model, body)

    def _create(self, model: str, body: Any) -> web.Response:
        if not isinstance(body, dict) or not isinstance(body.get("input"), dict):
            return self._problem(422, "Input validation failed", "- input: input is required")
        inputs = body["input"]
        invalid = _validate(inputs, self.schemas[model]["components"]["schemas"])
        if invalid:
            detail = "\n".join(f"- {f['field']}: {f['description']}" for f in invalid)
            return self._problem(422, "Input validation failed", detail, invalid_fields=invalid)
        p = self.add_prediction(model, inputs)
        image = inputs.get("image")
        if isinstance(image, str):
            p.image = _data_uri_image(image)
        if "forbidden" in str(inputs.get("prompt", "")).lower():
            p.error = "The input or output was flagged as sensitive. Please try again with different inputs. (E005)"
        return web.json_response(p.view(self.base_url), status=201)

    async def _get(self, request: web.Request) -> web.Response:
        p = self.predictions.get(request.match_info["id"])
        if p is None:
            return self._not_found()
        await self._advance(p)
        return web.json_response(p.view(self.base_url))

    async def _list(self, request: web.Request) -> web.Response:
        ordered = sorted(self.predictions.values(), key=lambda p: p.created_at, reverse=True)
        start = int(request.query.get("cursor", "0"))
        page = ordered[start : start + self.page_size]
        more = start + self.page_size < len(ordered)
        results = [p.view(self.base_url) for p in page]
        return web.json_response({
            "previous": None, "next": f"{self.base_url}/v1/predictions?cursor={start + self.page_size}" if more else None,
            "results": results,
        })  # fmt: skip

    async def _cancel(self, request: web.Request) -> web.Response:
        p = self.predictions.get(request.match_info["id"])
        if p is None:
            return self._not_found()
        if p.status in ("starting", "processing"):
            p.status, p.completed_at = "canceled", time.time()
        return web.json_response(p.view(self.base_url))

    async def _advance(self, p: Prediction) -> None:
        if p.status in ("succeeded", "failed", "canceled") or self.hold and p.status == "processing":
            return
        p.reads += 1
        if p.status == "starting":
            p.status, p.logs = "processing", "Loading pipeline...\n"
            return
        if p.reads <= self.steps:
            p.logs += f"{int(100 * p.reads / (self.steps + 1)):3d}%|#####     | {p.reads}/{self.steps + 1}\n"
            return
        if p.error:
            p.status, p.completed_at = "failed", time.time()
            return
        if p.model in IMAGE_MODELS:
            width, height = IMAGE_SIZES[str(p.input.get("aspect_ratio", "1:1"))]
            fmt = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}[str(p.input.get("output_format", "webp"))]
            p.still = self.work_dir / f"replicate-{p.id}.{fmt.lower()}"
            colour = (int(p.input.get("seed", 0)) % 200 + 30, 90, 160)
            await asyncio.to_thread(Image.new("RGB", (width, height), colour).save, p.still, fmt)
            p.status, p.completed_at = "succeeded", time.time()
            return
        p.video = self.work_dir / f"replicate-{p.id}.mp4"
        width, height, seconds = _output_shape(p)
        await asyncio.to_thread(render_clip, p.video, prompt=str(p.input.get("prompt", "replicate")), seconds=seconds,
                                width=width, height=height, fps=FPS, seed=p.input.get("seed"), base_image=p.image)  # fmt: skip
        p.status, p.completed_at = "succeeded", time.time()

    async def _still(self, request: web.Request) -> web.StreamResponse:
        p = self.predictions.get(request.match_info["id"])
        if p is None or p.still is None or p.expired:
            return web.Response(status=404, text="Not Found")
        return web.FileResponse(p.still)

    async def _file(self, request: web.Request) -> web.StreamResponse:
        p = self.predictions.get(request.match_info["id"])
        if p is None or p.video is None or p.expired:
            return web.Response(status=404, text="Not Found")
        return web.FileResponse(p.video, headers={"Content-Type": "video/mp4"})


# --- input checks and outputs -------------------------------------------------------------------


def _validate(inputs: dict[str, Any], schemas: dict[str, Any]) -> list[dict[str, str]]:
    """Cog's checks: required fields, types, enums, ranges; unknown fields are refused too."""
    spec = schemas["Input"]
    props = spec["properties"]
    out: list[dict[str, str]] = []

    def bad(name: str, kind: str, description: str) -> None:
        out.append({"type": kind, "field": f"input.{name}", "description": description})

    for name in spec.get("required", []):
        if name not in inputs:
            bad(name, "required", f"{name} is required")
    for name, value in inputs.items():
        prop = props.get(name)
        if prop is None:
            bad(name, "additional_property_not_allowed", f"Additional property {name} is not allowed")
            continue
        ref = (prop.get("allOf") or [{}])[0].get("$ref", "")
        if ref:
            allowed = schemas[ref.rsplit("/", 1)[-1]]["enum"]
            if value not in allowed:
                bad(name, "enum", f"{name} must be one of the following: " + ", ".join(f'"{v}"' for v in allowed))
            continue
        kind = prop.get("type")
        if kind == "integer" and (not isinstance(value, int) or isinstance(value, bool)):
            bad(name, "invalid_type", "Invalid type. Expected: integer")
        elif kind == "string" and not isinstance(value, str):
            bad(name, "invalid_type", "Invalid type. Expected: string")
        elif kind == "string" and prop.get("format") == "uri" and not (value.startswith(("http", "data:")) and _data_uri_ok(value)):
            bad(name, "format", "Does not match format 'uri'")
        elif kind == "boolean" and not isinstance(value, bool):
            bad(name, "invalid_type", "Invalid type. Expected: boolean")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if "minimum" in prop and value < prop["minimum"]:
                bad(name, "number_gte", f"Must be greater than or equal to {prop['minimum']}")
            if "maximum" in prop and value > prop["maximum"]:
                bad(name, "number_lte", f"Must be less than or equal to {prop['maximum']}")
    return out


def _data_uri_ok(value: str) -> bool:
    return not value.startswith("data:") or _data_uri_image(value) is not None


def _data_uri_image(uri: str) -> Image.Image | None:
    header, _, payload = uri.partition(",")
    if not header.startswith("data:image/") or not header.endswith(";base64"):
        return None
    try:
        image = Image.open(io.BytesIO(base64.b64decode(payload, validate=True)))
        image.load()
    except (binascii.Error, ValueError, OSError):
        return None
    return image.convert("RGB")


def sent_image(record: Recorded) -> Image.Image:
    image = _data_uri_image(record.json["input"]["image"])
    assert image is not None, "the image input is not a data URI of an image"
    return image


def _output_shape(p: Prediction) -> tuple[int, int, int]:
    """(width, height, seconds) of the clip a prediction asked for, divided by SCALE."""
    i = p.input
    if "size" in i:
        width, height = (int(v) for v in str(i["size"]).split("*"))
    elif "width" in i or p.model == "tencent/hunyuan-video":
        width, height = int(i.get("width", 864)), int(i.get("height", 480))
    elif "target_size" in i or p.model == "lightricks/ltx-video":
        w, h = (int(v) for v in str(i.get("aspect_ratio", "3:2")).split(":"))
        long = int(i.get("target_size", 640))
        width, height = (long, round(long * h / w)) if w >= h else (round(long * w / h), long)
    else:
        short = int(str(i.get("resolution", "720p")).rstrip("p"))
        ratio = (p.image.width / p.image.height) if p.image is not None else 16 / 9
        width, height = (round(short * ratio), short) if ratio >= 1 else (short, round(short / ratio))
    if "video_length" in i or "length" in i:
        frames = int(i.get("video_length", i.get("length", 97)))
        seconds = round((frames - 1) / int(i.get("fps", 24)))
    else:
        seconds = int(i.get("duration", 5))
    width, height = width // SCALE, height // SCALE
    return width - width % 2, height - height % 2, seconds


def _prediction_id() -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(26))


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_ids = itertools.count()


@pytest.fixture
async def replicate_server(tmp_path: Path) -> AsyncIterator[ReplicateServer]:
    server = await ReplicateServer(tmp_path / f"replicate-server-{next(_ids)}").start()
    server.work_dir.mkdir(parents=True, exist_ok=True)
    try:
        yield server
    finally:
        await server.stop()
