"""A stateful loopback emulator of the Google endpoints google-genai 3.6 speaks, on plain HTTP.

Gemini Developer API (header `x-goog-api-key`):
- `POST /v1/interactions` creates a background interaction (`model`, `input` of `user_input`
  steps with text/image/video content, `response_modalities`, `response_format` {type: video,
  aspect_ratio, duration, resolution, delivery}, `generation_config` {seed, video_config.task},
  `previous_interaction_id`); `GET /v1/interactions/{id}` moves it one step until `completed`
  with a `model_output` step holding the video (inline base64, or a `uri` under
  `/v1/files/{id}:download?alt=media`, which also takes the key); `POST …/{id}/cancel`.
- `POST /v1/models/{model}:generateContent`: an image (`inlineData`, PNG) for image models.

Vertex AI (`Authorization: Bearer TOKEN`, under `/v1beta1/projects/{p}/locations/{l}/publishers/google/models/{m}`):
- `:predictLongRunning` starts a Veo operation; `:fetchPredictOperation` {operationName} reads it
  (done with `response.videos[].bytesBase64Encoded`, or RAI-filtered, or an `error`);
- `:generateContent` as above.

Outputs are real MP4s (PyAV, via the local renderer, AAC sound when asked) at a tenth of the
requested size, and PNGs made with Pillow. A prompt containing a word of `refuse_words` is
blocked the way each API blocks. Every request is recorded; faults (429 with Retry-After,
503...) are injected per test.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import pytest
from aiohttp import web

from tests.fakes.loopback import serve
from PIL import Image

from providers.local_render import Soundtrack, render_clip

KEY = "gemini-test-key"
TOKEN = "ya29.vertex-test-token"
PROJECT = "videobot-test"
LOCATION = "us-central1"
#: Output frames are the video size divided by this (1280x720 -> 128x72).
SCALE = 10
FPS = 8
OMNI_MODELS = {"gemini-omni-1.2-flash", "gemini-omni-1.1-flash"}
VEO_MODELS = {"veo-3.1-generate-001", "veo-3.1-fast-generate-001"}
IMAGE_MODELS = {"gemini-2.5-flash-image", "gemini-3-pro-image", "gemini-3.1-flash-lite-image"}
_RES = {"360p": 360, "720p": 720, "1080p": 1080, "4k": 2160}
_IMAGE_SIZES = {
    "1:1": (1024, 1024), "2:3": (832, 1248), "3:2": (1248, 832), "3:4": (864, 1184), "4:3": (1184, 864),
    "4:5": (896, 1152), "5:4": (1152, 896), "9:16": (768, 1344), "16:9": (1344, 768), "21:9": (1536, 672),
}  # fmt: skip
_VERTEX = re.compile(r"^/v1beta1/projects/(?P<p>[^/]+)/locations/(?P<l>[^/]+)/publishers/google/models/(?P<m>[^/:]+):(?P<verb>\w+)$")


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
    pattern: str
    status: int
    times: int
    headers: dict[str, str]
    body: Any


@dataclass
class Job:
    """An interaction or a Veo operation."""

    id: str
    kind: str  # "interaction" | "operation"
    model: str
    body: dict[str, Any]
    prompt: str
    width: int
    height: int
    seconds: int
    audio: bool
    status: str = "in_progress"
    gets: int = 0
    image: Image.Image | None = None
    #: The clip this one continues (extend): its frames come first when the API returns the whole clip.
    base_video: Path | None = None
    video: Path | None = None
    #: (code, message) of a failure to report when it finishes.
    failure: tuple[Any, str] | None = None
    filtered: str | None = None
    previous: str | None = None


class GoogleServer:
    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.requests: list[Recorded] = []
        self.jobs: dict[str, Job] = {}
        self.faults: list[Fault] = []
        #: Reads a job takes to finish.
        self.steps = 2
        #: When set, jobs stay in progress.
        self.hold = False
        self.refuse_words = ("forbidden",)
        #: (code, message) failures for the next jobs created, one each.
        self.next_failures: list[tuple[Any, str]] = []
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # --- control and inspection from tests -----------------------------------------------

    def fail(self, method: str, pattern: str, status: int, *, times: int = 1,
             headers: dict[str, str] | None = None, body: Any = None) -> None:  # fmt: skip
        """The next `times` requests whose path contains `pattern` answer `status` (a Google error body)."""
        self.faults.append(Fault(method, pattern, status, times, headers or {}, body))

    def calls(self, method: str, contains: str = "") -> list[Recorded]:
        return [r for r in self.requests if r.method == method and contains in r.path]

    def creates(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST" and (r.path.endswith("/interactions") or r.path.endswith(":predictLongRunning"))]

    # --- life cycle ----------------------------------------------------------------------

    async def start(self) -> GoogleServer:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[self._middleware])
        app.router.add_post("/{ver}/interactions", self._create_interaction)
        app.router.add_get("/{ver}/interactions/{id}", self._get_interaction)
        app.router.add_post("/{ver}/interactions/{id}/cancel", self._cancel_interaction)
        app.router.add_get("/{ver}/files/{name}", self._file)
        app.router.add_post("/{ver}/models/{spec}", self._gemini_model_call)
        app.router.add_post(r"/v1beta1/projects/{rest:.+}", self._vertex_call)
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
        if request.method == "POST" and request.can_read_body:
            try:
                parsed = await request.json()
            except ValueError:
                parsed = None
        self.requests.append(Recorded(request.method, request.path, dict(request.headers), dict(request.query), parsed))
        for fault in self.faults:
            if fault.times > 0 and fault.method == request.method and fault.pattern in request.path:
                fault.times -= 1
                body = fault.body if fault.body is not None else _error(fault.status, f"injected {fault.status}")
                return web.json_response(body, status=fault.status, headers=fault.headers)
        if request.path.startswith("/v1beta1/"):
            if request.headers.get("Authorization") != f"Bearer {TOKEN}":
                return web.json_response(_error(401, "Request had invalid authentication credentials.", "UNAUTHENTICATED"), status=401)
        elif request.headers.get("x-goog-api-key") != KEY:
            return web.json_response(_error(400, "API key not valid. Please pass a valid API key.", "INVALID_ARGUMENT"), status=400)
        return await handler(request)

    def _refused(self, prompt: str) -> bool:
        return any(w in prompt.lower() for w in self.refuse_words)

    def _new_id(self) -> str:
        return uuid.uuid4().hex[:16]

    # --- Interactions API ----------------------------------------------------------------

    async def _create_interaction(self, request: web.Request) -> web.Response:
        body = await request.json()
        model = str(body.get("model", ""))
        if model not in OMNI_MODELS:
            return web.json_response(_error(404, f"models/{model} is not found for API version v1, or is not supported.", "NOT_FOUND"), status=404)
        if body.get("background") is not True:
            return web.json_response(_error(400, "Video generation requires background=true.", "INVALID_ARGUMENT"), status=400)
        fmt = body.get("response_format") or {}
        if fmt.get("type") != "video" or "video" not in (body.get("response_modalities") or []):
            return web.json_response(_error(400, "response_format must request video.", "INVALID_ARGUMENT"), status=400)
        steps = body.get("input") or []
        contents = [c for s in steps if s.get("type") == "user_input" for c in s.get("content", [])]
        texts = [c.get("text", "") for c in contents if c.get("type") == "text"]
        if not texts:
            return web.json_response(_error(400, "input needs a text prompt.", "INVALID_ARGUMENT"), status=400)
        prompt = " ".join(texts)
        image = None
        base_video = None
        for c in contents:
            try:
                raw = base64.b64decode(c.get("data", ""), validate=True) if c.get("type") in ("image", "video") else b""
            except binascii.Error:
                return web.json_response(_error(400, f"{c.get('type')} data is not base64.", "INVALID_ARGUMENT"), status=400)
            if c.get("type") == "image":
                image = Image.open(io.BytesIO(raw))
                image.load()
            elif c.get("type") == "video":
                base_video = self.work_dir / f"input-{self._new_id()}.mp4"
                base_video.write_bytes(raw)
                _probe(base_video)
        task = ((body.get("generation_config") or {}).get("video_config") or {}).get("task")
        previous_id = body.get("previous_interaction_id")
        previous = self.jobs.get(previous_id) if previous_id else None
        if previous_id and (previous is None or previous.kind != "interaction"):
            return web.json_response(_error(404, f"Interaction {previous_id} was not found.", "NOT_FOUND"), status=404)
        if previous is not None:
            base_video = previous.video
        audio = "audio" in (body.get("response_modalities") or [])
        if task in ("edit", "extend") and base_video is None:
            return web.json_response(_error(400, f"task {task} needs a previous interaction or an input video.", "INVALID_ARGUMENT"), status=400)
        if task in ("edit", "extend"):
            info = _probe(base_video)  # type: ignore[arg-type]
            width, height = info[0], info[1]
            seconds = round(info[2]) if task == "edit" else _seconds(fmt.get("duration"))
            if seconds is None:
                return web.json_response(_error(400, "duration must be like '8s', 4 to 8 seconds.", "INVALID_ARGUMENT"), status=400)
        else:
            shape = _shape(fmt.get("aspect_ratio"), fmt.get("resolution"))
            seconds = _seconds(fmt.get("duration"))
            if shape is None or seconds is None:
                return web.json_response(_error(400, f"Unsupported video format {fmt}.", "INVALID_ARGUMENT"), status=400)
            width, height = shape
        job = Job(self._new_id(), "interaction", model, body, prompt, width, height, seconds, audio, image=image,
                  previous=previous_id)  # fmt: skip
        # Gemini Omni's extend answers the new seconds only (the caller joins them); an edit is a whole new clip.
        if self.next_failures:
            job.failure = self.next_failures.pop(0)
        if self._refused(prompt):
            job.failure = ("https://ai.google.dev/errors/safety", "The request was blocked by safety filters: the prompt may violate the usage guidelines.")
        self.jobs[job.id] = job
        return web.json_response(self._interaction_json(job))

    async def _get_interaction(self, request: web.Request) -> web.Response:
        job = self.jobs.get(request.match_info["id"])
        if job is None or job.kind != "interaction":
            return web.json_response(_error(404, "Interaction not found.", "NOT_FOUND"), status=404)
        await self._advance(job)
        return web.json_response(self._interaction_json(job))

    async def _cancel_interaction(self, request: web.Request) -> web.Response:
        job = self.jobs.get(request.match_info["id"])
        if job is None:
            return web.json_response(_error(404, "Interaction not found.", "NOT_FOUND"), status=404)
        if job.status != "in_progress":
            return web.json_response(_error(400, f"Interaction is {job.status}.", "FAILED_PRECONDITION"), status=400)
        job.status = "cancelled"
        return web.json_response(self._interaction_json(job))

    def _interaction_json(self, job: Job) -> dict[str, Any]:
        out: dict[str, Any] = {"id": job.id, "status": job.status, "model": job.model, "created": "2026-12-07T00:00:00Z"}
        if job.previous:
            out["previous_interaction_id"] = job.previous
        if job.status == "failed" and job.failure is not None:
            out["errors"] = [{"code": str(job.failure[0]), "message": job.failure[1]}]
        if job.status == "completed" and job.video is not None:
            fmt = job.body.get("response_format") or {}
            if fmt.get("delivery") == "uri":
                video = {"type": "video", "uri": f"{self.base_url}/v1/files/{job.id}:download?alt=media", "mime_type": "video/mp4"}
            else:
                video = {"type": "video", "data": base64.b64encode(job.video.read_bytes()).decode(), "mime_type": "video/mp4"}
            out["steps"] = [
                {"type": "user_input", "content": [{"type": "text", "text": job.prompt}]},
                {"type": "model_output", "content": [{"type": "text", "text": "Here is your video."}, video]},
            ]
        return out

    async def _file(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        job = self.jobs.get(name.removesuffix(":download"))
        if job is None or job.video is None or request.query.get("alt") != "media":
            return web.json_response(_error(404, "File not found.", "NOT_FOUND"), status=404)
        return web.FileResponse(job.video, headers={"Content-Type": "video/mp4"})

    # --- Veo on Vertex -------------------------------------------------------------------

    async def _vertex_call(self, request: web.Request) -> web.Response:
        m = _VERTEX.match(request.path)
        if m is None:
            return web.json_response(_error(404, "Not found.", "NOT_FOUND"), status=404)
        if (m["p"], m["l"]) != (PROJECT, LOCATION):
            return web.json_response(_error(403, f"Permission denied on project {m['p']}.", "PERMISSION_DENIED"), status=403)
        body = await request.json()
        if m["verb"] == "generateContent":
            return self._image(m["m"], body)
        if m["m"] not in VEO_MODELS:
            return web.json_response(_error(404, f"Publisher Model `{m['m']}` was not found.", "NOT_FOUND"), status=404)
        if m["verb"] == "predictLongRunning":
            return await self._start_operation(request.path.rsplit(":", 1)[0], m["m"], body)
        if m["verb"] == "fetchPredictOperation":
            job = self.jobs.get(str(body.get("operationName", "")).rpartition("/operations/")[2])
            if job is None or job.kind != "operation":
                return web.json_response(_error(404, "Operation not found.", "NOT_FOUND"), status=404)
            await self._advance(job)
            return web.json_response(self._operation_json(job))
        return web.json_response(_error(400, f"Unknown method {m['verb']}.", "INVALID_ARGUMENT"), status=400)

    async def _start_operation(self, resource: str, model: str, body: dict[str, Any]) -> web.Response:
        instances, params = body.get("instances") or [{}], body.get("parameters") or {}
        instance = instances[0]
        prompt = str(instance.get("prompt") or "")
        bad = lambda msg: web.json_response(_error(400, msg, "INVALID_ARGUMENT"), status=400)  # noqa: E731
        if params.get("sampleCount", 1) != 1 or not isinstance(params.get("generateAudio", False), bool):
            return bad("sampleCount must be 1 and generateAudio a boolean.")
        image = None
        if "image" in instance:
            image = Image.open(io.BytesIO(base64.b64decode(instance["image"]["bytesBase64Encoded"])))
            image.load()
        for key in ("lastFrame",):
            if key in instance:
                Image.open(io.BytesIO(base64.b64decode(instance[key]["bytesBase64Encoded"]))).load()
        base_video = None
        if "video" in instance:
            base_video = self.work_dir / f"veo-input-{self._new_id()}.mp4"
            base_video.write_bytes(base64.b64decode(instance["video"]["bytesBase64Encoded"]))
            width, height, _ = _probe(base_video)
            if params.get("durationSeconds") != 7:
                return bad("Video extension adds 7 seconds (durationSeconds=7).")
            seconds = 7
        else:
            shape = _shape(params.get("aspectRatio", "16:9"), params.get("resolution", "720p"))
            if shape is None or params.get("resolution", "720p") not in ("720p", "1080p") or params.get("durationSeconds") not in (4, 6, 8):
                return bad(f"Unsupported parameters {params}: durationSeconds 4, 6 or 8; aspectRatio 16:9 or 9:16; resolution 720p or 1080p.")
            width, height = shape
            seconds = int(params["durationSeconds"])
        job = Job(self._new_id(), "operation", model, body, prompt, width, height, seconds, bool(params.get("generateAudio")),
                  image=image, base_video=base_video)  # fmt: skip
        if self.next_failures:
            job.failure = self.next_failures.pop(0)
        if self._refused(prompt):
            job.filtered = "Veo could not generate videos because the input image or prompt violates Vertex AI's usage guidelines."
        self.jobs[job.id] = job
        return web.json_response({"name": f"{resource.removeprefix('/v1beta1/')}/operations/{job.id}"})

    def _operation_json(self, job: Job) -> dict[str, Any]:
        name = f"projects/{PROJECT}/locations/{LOCATION}/publishers/google/models/{job.model}/operations/{job.id}"
        if job.status == "in_progress":
            return {"name": name, "done": False}
        if job.status == "failed" and job.failure is not None:
            return {"name": name, "done": True, "error": {"code": job.failure[0], "message": job.failure[1]}}
        response: dict[str, Any] = {"@type": "type.googleapis.com/cloud.ai.large_models.vision.GenerateVideoResponse"}
        if job.filtered:
            response.update(raiMediaFilteredCount=1, raiMediaFilteredReasons=[job.filtered])
        else:
            assert job.video is not None
            response["videos"] = [{"bytesBase64Encoded": base64.b64encode(job.video.read_bytes()).decode(), "mimeType": "video/mp4"}]
        return {"name": name, "done": True, "response": response}

    # --- both ----------------------------------------------------------------------------

    async def _advance(self, job: Job) -> None:
        if job.status != "in_progress" or self.hold:
            return
        job.gets += 1
        if job.gets < self.steps:
            return
        if job.failure is not None or (job.filtered is None and job.kind == "interaction" and self._refused(job.prompt)):
            job.status = "failed"
            return
        if job.filtered is None:
            job.video = self.work_dir / f"{job.id}.mp4"
            await asyncio.to_thread(self._render, job)
        job.status = "completed"

    def _render(self, job: Job) -> None:
        w, h = job.width, job.height
        seed = (job.body.get("parameters") or {}).get("seed") or (job.body.get("generation_config") or {}).get("seed")
        sound = Soundtrack(job.prompt, seed) if job.audio else None
        if job.kind == "operation" and job.base_video is not None:
            # Veo answers an extension with the whole clip: the input, then the new seconds.
            segment = self.work_dir / f"{job.id}-segment.mp4"
            render_clip(segment, prompt=job.prompt, seconds=job.seconds, width=w, height=h, fps=FPS, seed=seed, soundtrack=sound)
            from providers.media import concat_videos

            concat_videos(job.base_video, segment, job.video, fps=FPS)  # type: ignore[arg-type]
            return
        base = job.image.convert("RGB").resize((w, h)) if job.image is not None else None
        render_clip(job.video, prompt=job.prompt, seconds=job.seconds, width=w, height=h, fps=FPS, seed=seed,  # type: ignore[arg-type]
                    base_image=base, soundtrack=sound)  # fmt: skip

    async def _gemini_model_call(self, request: web.Request) -> web.Response:
        model, _, verb = request.match_info["spec"].partition(":")
        if verb != "generateContent":
            return web.json_response(_error(400, f"Unknown method {verb}.", "INVALID_ARGUMENT"), status=400)
        return self._image(model, await request.json())

    def _image(self, model: str, body: dict[str, Any]) -> web.Response:
        if model not in IMAGE_MODELS:
            return web.json_response(_error(404, f"models/{model} is not found for API version v1.", "NOT_FOUND"), status=404)
        config = body.get("generationConfig") or {}
        if config.get("responseModalities") != ["IMAGE"]:
            return web.json_response(_error(400, "responseModalities must be [IMAGE].", "INVALID_ARGUMENT"), status=400)
        ratio = (config.get("imageConfig") or {}).get("aspectRatio", "1:1")
        if ratio not in _IMAGE_SIZES:
            return web.json_response(_error(400, f"aspectRatio {ratio} is not supported.", "INVALID_ARGUMENT"), status=400)
        prompt = " ".join(p.get("text", "") for c in body.get("contents", []) for p in c.get("parts", []))
        if self._refused(prompt):
            return web.json_response({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "modelVersion": model})
        width, height = _IMAGE_SIZES[ratio]
        image = Image.new("RGB", (width, height), (30, 120, 200))
        image.paste((240, 200, 40), (width // 4, height // 4, width * 3 // 4, height * 3 // 4))
        out = io.BytesIO()
        image.save(out, "PNG")
        part = {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(out.getvalue()).decode()}}
        return web.json_response({
            "candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP", "index": 0}],
            "modelVersion": model, "responseId": self._new_id(),
            "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 1290, "totalTokenCount": 1298},
        })  # fmt: skip


def _error(code: int, message: str, status: str = "") -> dict[str, Any]:
    names = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
             429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}  # fmt: skip
    return {"error": {"code": code, "message": message, "status": status or names.get(code, "UNKNOWN")}}


def _shape(ratio: object, resolution: object) -> tuple[int, int] | None:
    short = _RES.get(str(resolution))
    if short is None or ratio not in ("16:9", "9:16"):
        return None
    long = short * 16 // 9
    w, h = (long, short) if ratio == "16:9" else (short, long)
    return w // SCALE - (w // SCALE) % 2, h // SCALE - (h // SCALE) % 2


def _seconds(value: object) -> int | None:
    m = re.fullmatch(r"(\d+)s", str(value or ""))
    return int(m.group(1)) if m and 4 <= int(m.group(1)) <= 8 else None


def _probe(path: Path) -> tuple[int, int, float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        duration = float(stream.duration * stream.time_base) if stream.duration else (container.duration or 0) / 1e6
        return stream.codec_context.width, stream.codec_context.height, duration


_ids = itertools.count()


@pytest.fixture
async def google_server(tmp_path: Path) -> AsyncIterator[GoogleServer]:
    server = await GoogleServer(tmp_path / f"google-server-{next(_ids)}").start()
    try:
        yield server
    finally:
        await server.stop()
