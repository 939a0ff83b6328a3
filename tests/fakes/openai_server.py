"""A stateful loopback emulator of the OpenAI Videos protocol (`/v1/videos`), image generations
and moderations (`/v1/moderations`, with a deterministic classifier: see `_classify`).

Built to /work/shared/specs/openai-videos-images.json so the real openai SDK can be pointed at it
(`base_url`). It records every request, runs a job lifecycle (progress per poll, or per time),
serves real decodable MP4s (rendered at a tenth of the requested size, so tests stay fast), and
injects faults: scripted HTTP errors with headers, an error answered after a create was accepted,
dropped connections (also mid-download), failed jobs, policy rejections, expired content.
"""
from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import secrets
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.fakes.loopback import serve
from PIL import Image, ImageChops

from providers.local_render import render_clip
from providers.media import concat_videos, first_frame, probe_video

SORA_SECONDS = {"4", "8", "12"}
SORA_EXTEND_SECONDS = {"4", "8", "12", "16", "20"}
SORA_SIZES = {"720x1280", "1280x720", "1024x1792", "1792x1024"}
IMAGE_FIXED_SIZES = {"1024x1024", "1536x1024", "1024x1536", "auto"}
IMAGE_QUALITIES = {"low", "medium", "high", "auto"}
#: Output tokens of a 1024x1024 image by quality (scaled by area for other sizes).
IMAGE_TOKENS = {"low": 272, "medium": 1056, "high": 4160, "auto": 1056}
#: A prompt containing this word is refused by "moderation", like a real policy rejection.
BLOCKED_WORD = "forbidden"

MODERATION_MODELS = {"omni-moderation-latest", "omni-moderation-2024-09-26", "text-moderation-latest", "text-moderation-stable"}
#: Every category a moderation result names (CreateModerationResponse: all are required).
MODERATION_CATEGORIES = (
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
    "self-harm", "self-harm/intent", "self-harm/instructions", "sexual", "sexual/minors", "violence",
    "violence/graphic",
)  # fmt: skip
#: The categories the omni model also judges on images; the others are text only.
IMAGE_CATEGORIES = {"self-harm", "self-harm/intent", "self-harm/instructions", "sexual", "violence", "violence/graphic"}
#: The emulator's text classifier: a word starting with one of these (case-insensitive, so
#: "Gore", "kills") flags the listed categories. Tests may change `OpenAIEmulator.moderation_triggers`.
MODERATION_TRIGGERS: dict[str, tuple[str, ...]] = {
    "gore": ("violence/graphic", "violence"),
    "kill": ("violence",),
    "hateword": ("hate",),
}
#: The emulator's image classifier: an image is "sexual" when at least this share of its pixels
#: is exactly MAGENTA (RGB 255, 0, 255; alpha ignored). Nothing else in an image is ever flagged.
MAGENTA = (255, 0, 255)
MAGENTA_SHARE = 0.9


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    content_type: str
    #: JSON body, or the multipart text fields.
    fields: dict[str, Any]
    #: Multipart file parts: name -> {"filename", "content_type", "data"}.
    files: dict[str, dict[str, Any]]
    op: str


@dataclass
class ModerationCall:
    """One `/v1/moderations` request as the classifier saw it."""

    model: str
    #: Each input: {"type": "text", "text"} or {"type": "image", "mime", "format", "width", "height",
    #: "magenta" (the share of magenta pixels)}.
    inputs: list[dict[str, Any]]
    #: Per result, the flagged categories.
    flagged: list[list[str]]


@dataclass
class Fault:
    op: str
    #: "status": answer `status` instead of handling; "after_accept": handle (the job exists), then
    #: answer `status`; "drop" / "drop_after_accept": close the connection without an answer;
    #: "partial": send half of the content, then close.
    kind: str = "status"
    status: int = 500
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    times: int = 1


@dataclass
class VideoJob:
    id: str
    model: str
    prompt: str
    seconds: int
    size: str
    created_at: int
    status: str = "queued"
    progress: int = 0
    completed_at: int | None = None
    expires_at: int | None = None
    error: dict[str, str] | None = None
    remixed_from_video_id: str | None = None
    polls: int = 0
    fail_with: tuple[str, str] | None = None
    kind: str = "create"  # create | remix | extend | edit
    source_id: str | None = None
    source_file: Path | None = None
    reference: Image.Image | None = None
    seed: int = 0
    mp4: Path | None = None
    deleted: bool = False
    expired: bool = False
    #: Precise start for progress by time (`created_at` is whole seconds, as in the API).
    started: float = field(default_factory=time.monotonic)

    def resource(self) -> dict[str, Any]:
        return {
            "id": self.id, "object": "video", "model": self.model, "status": self.status, "progress": self.progress,
            "created_at": self.created_at, "completed_at": self.completed_at, "expires_at": self.expires_at,
            "prompt": self.prompt, "size": self.size, "seconds": str(self.seconds),
            "remixed_from_video_id": self.remixed_from_video_id, "error": self.error,
        }  # fmt: skip


def api_error(status: int, message: str, *, code: str | None = None, param: str | None = None, type_: str = "invalid_request_error", headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return web.json_response(body, status=status, headers=headers)


class OpenAIEmulator:
    def __init__(self, work_dir: Path, *, api_key: str = "sk-test-emulator") -> None:
        self.work_dir = work_dir
        self.api_key = api_key
        self.requests: list[Recorded] = []
        self.videos: dict[str, VideoJob] = {}
        self.faults: list[Fault] = []
        #: "poll": each retrieve advances a job by 100/polls_to_complete; "time": by elapsed/seconds_to_complete.
        self.advance = "poll"
        self.polls_to_complete = 3
        self.seconds_to_complete = 1.0
        #: While True, jobs stay in progress (at most 50 %): lets a test stop a runner mid-job.
        self.hold = False
        #: Jobs created while this is set fail with (code, message).
        self.fail_jobs: tuple[str, str] | None = None
        self.poll_after_ms: int | None = 20
        self.expires_after = 3600
        self.fps = 6
        self.scale = 10
        self.video_models = {"sora-2", "sora-2-pro", "sora-2-2025-12-08", "minimax/h3", "google/veo-3.1-fast"}
        self.retired_models = {"sora-1", "dall-e-3", "gpt-image-1"}
        self.image_models = {"gpt-image-2", "gpt-image-1-mini", "gpt-image-2.5-flare"}
        self.moderation_models = set(MODERATION_MODELS)
        self.moderation_triggers: dict[str, tuple[str, ...]] = dict(MODERATION_TRIGGERS)
        #: Every moderation request that was classified (faults and auth failures are not).
        self.moderations: list[ModerationCall] = []
        #: Chat models the text endpoint serves; `chat_reply`, when set, is the next answer's content.
        self.text_models = {"gpt-5-mini", "gpt-5", "gpt-4.1-mini"}
        self.chat_reply: str | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    # --- life cycle -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def env(self) -> dict[str, str]:
        """The settings that point an app at this emulator."""
        return {"OPENAI_API_KEY": self.api_key, "OPENAI_BASE_URL": self.base_url}

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/videos", self._create)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/v1/videos", self._list)
        app.router.add_post("/v1/videos/extensions", self._extend)
        app.router.add_post("/v1/videos/edits", self._edit)
        app.router.add_get("/v1/videos/{video_id}", self._retrieve)
        app.router.add_delete("/v1/videos/{video_id}", self._delete)
        app.router.add_post("/v1/videos/{video_id}/remix", self._remix)
        app.router.add_get("/v1/videos/{video_id}/content", self._content)
        app.router.add_post("/v1/images/generations", self._image)
        app.router.add_post("/v1/moderations", self._moderations)
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner, self.port = await serve(app, handle_signals=False, access_log=None)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # --- test controls ----------------------------------------------------------------------

    def fail(self, op: str, status: int, *, code: str | None = None, message: str = "error", headers: dict[str, str] | None = None, times: int = 1, param: str | None = None) -> None:
        body = {"error": {"message": message, "type": "invalid_request_error" if status < 500 else "server_error", "param": param, "code": code}}
        self.faults.append(Fault(op, "status", status, body, headers or {}, times))

    def accept_then_fail(self, op: str = "create", status: int = 500) -> None:
        self.faults.append(Fault(op, "after_accept", status, {"error": {"message": "internal error", "type": "server_error", "param": None, "code": None}}))

    def drop(self, op: str, *, after_accept: bool = False, times: int = 1) -> None:
        self.faults.append(Fault(op, "drop_after_accept" if after_accept else "drop", times=times))

    def partial(self, op: str = "content", times: int = 1) -> None:
        self.faults.append(Fault(op, "partial", times=times))

    def expire(self, video_id: str) -> None:
        """Content gone after `expires_at`, as the API does after its retention window."""
        job = self.videos[video_id]
        job.expires_at = int(time.time()) - 1
        job.expired = True

    def calls(self, op: str) -> list[Recorded]:
        return [r for r in self.requests if r.op == op]

    @property
    def creates(self) -> list[Recorded]:
        return [r for r in self.requests if r.op in ("create", "remix", "extend", "edit")]

    # --- plumbing ---------------------------------------------------------------------------

    async def _record(self, request: web.Request, op: str) -> Recorded:
        content_type = request.headers.get("Content-Type", "")
        fields: dict[str, Any] = {}
        files: dict[str, dict[str, Any]] = {}
        if content_type.startswith("multipart/"):
            reader = await request.multipart()
            async for part in reader:
                if part.filename is not None:  # type: ignore[union-attr]
                    files[part.name or ""] = {  # type: ignore[union-attr]
                        "filename": part.filename,  # type: ignore[union-attr]
                        "content_type": part.headers.get("Content-Type", ""),  # type: ignore[union-attr]
                        "data": await part.read(),  # type: ignore[union-attr]
                    }
                else:
                    fields[part.name or ""] = await part.text()  # type: ignore[union-attr]
        elif request.can_read_body:
            raw = await request.read()
            if raw:
                try:
                    fields = json.loads(raw)
                except ValueError:
                    fields = {"_raw": raw.decode(errors="replace")}
        rec = Recorded(
            method=request.method, path=request.path, query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()}, content_type=content_type,
            fields=fields, files=files, op=op,
        )  # fmt: skip
        self.requests.append(rec)
        return rec

    def _take_fault(self, op: str, kinds: tuple[str, ...]) -> Fault | None:
        for fault in self.faults:
            if fault.op == op and fault.kind in kinds and fault.times > 0:
                fault.times -= 1
                if fault.times == 0:
                    self.faults.remove(fault)
                return fault
        return None

    async def _models(self, request: web.Request) -> web.Response:
        """GET /v1/models: the cheapest authenticated call (`videobot doctor` checks the key with it)."""
        await self._record(request, "models")
        if (denied := self._auth_error(request)) is not None:
            return denied
        ids = ["sora-2", "sora-2-pro", "gpt-image-2", "gpt-5-mini", "omni-moderation-latest"]
        return web.json_response({"object": "list", "data": [{"id": i, "object": "model", "created": 0, "owned_by": "openai"} for i in ids]})

    def _auth_error(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return api_error(401, "Incorrect API key provided.", code="invalid_api_key")
        return None

    async def _guard(self, request: web.Request, op: str) -> tuple[Recorded, web.StreamResponse | None]:
        """Record, then authenticate and apply a fault that answers before handling."""
        rec = await self._record(request, op)
        if (denied := self._auth_error(request)) is not None:
            return rec, denied
        fault = self._take_fault(op, ("status", "drop"))
        if fault is not None and fault.kind == "drop":
            return rec, _drop(request)
        if fault is not None:
            return rec, web.json_response(fault.body, status=fault.status, headers=fault.headers)
        return rec, None

    def _after_accept(self, request: web.Request, op: str, ok: web.StreamResponse) -> web.StreamResponse:
        fault = self._take_fault(op, ("after_accept", "drop_after_accept"))
        if fault is None:
            return ok
        if fault.kind == "drop_after_accept":
            return _drop(request)
        return web.json_response(fault.body, status=fault.status, headers=fault.headers)

    def _video_response(self, job: VideoJob) -> web.Response:
        headers = {"x-request-id": f"req_{secrets.token_hex(6)}"}
        if job.status in ("queued", "in_progress") and self.poll_after_ms is not None:
            headers["openai-poll-after-ms"] = str(self.poll_after_ms)
        return web.json_response(job.resource(), headers=headers)

    def _new_job(self, *, model: str, prompt: str, seconds: int, size: str, kind: str) -> VideoJob:
        job = VideoJob(
            id=f"video_{secrets.token_hex(8)}", model=model, prompt=prompt, seconds=seconds, size=size,
            created_at=int(time.time()), fail_with=self.fail_jobs, kind=kind, seed=secrets.randbelow(2**31),
        )  # fmt: skip
        self.videos[job.id] = job
        return job

    def _check_model_and_prompt(self, model: str, prompt: str) -> web.Response | None:
        if not prompt:
            return api_error(400, "Missing required parameter: 'prompt'.", code="missing_required_parameter", param="prompt")
        if model in self.retired_models:
            return api_error(404, f"The model `{model}` has been deprecated.", code="model_not_found", param="model")
        if model not in self.video_models:
            return api_error(400, f"Invalid value: '{model}'. The model does not exist.", code="invalid_value", param="model")
        if BLOCKED_WORD in prompt.lower():
            return api_error(400, "Your request was blocked by our moderation system.", code="moderation_blocked")
        return None

    def _source(self, rec: Recorded) -> tuple[VideoJob | None, Path | None, web.Response | None]:
        """The `video` of an extension or edit: an uploaded file, or {"id": ...} of a completed job."""
        if "video" in rec.files:
            path = self.work_dir / f"upload_{secrets.token_hex(6)}.mp4"
            path.write_bytes(rec.files["video"]["data"])
            try:
                probe_video(path)
            except Exception:
                return None, None, api_error(400, "The uploaded video cannot be decoded.", code="invalid_video", param="video")
            return None, path, None
        ref = rec.fields.get("video")
        ref_id = ref.get("id") if isinstance(ref, dict) else rec.fields.get("video[id]")
        source = self.videos.get(str(ref_id)) if ref_id else None
        if source is None or source.deleted:
            return None, None, api_error(404, f"Video '{ref_id}' not found.", code="not_found", param="video")
        if source.status != "completed":
            return None, None, api_error(400, "The source video is not completed.", code="invalid_state", param="video")
        return source, None, None

    # --- videos -----------------------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.StreamResponse:
        rec, early = await self._guard(request, "create")
        if early is not None:
            return early
        f = rec.fields
        model, prompt = str(f.get("model") or "sora-2"), str(f.get("prompt") or "")
        seconds, size = str(f.get("seconds") or "4"), str(f.get("size") or "720x1280")
        if (bad := self._check_model_and_prompt(model, prompt)) is not None:
            return bad
        if model.startswith("sora-2"):
            if seconds not in SORA_SECONDS:
                return api_error(400, f"Invalid value: '{seconds}'. Supported values are: '4', '8', and '12'.", code="invalid_value", param="seconds")
            if size not in SORA_SIZES:
                return api_error(400, f"Invalid value: '{size}'. Supported values are: '720x1280', '1280x720', '1024x1792', and '1792x1024'.", code="invalid_value", param="size")
        if not re.fullmatch(r"\d+x\d+", size) or not seconds.isdigit():
            return api_error(400, "Invalid size or seconds.", code="invalid_value", param="size")
        reference = None
        if "input_reference" in rec.files:
            try:
                reference = Image.open(io.BytesIO(rec.files["input_reference"]["data"]))
                reference.load()
            except Exception:
                return api_error(400, "The input_reference is not an image.", code="invalid_image", param="input_reference")
            if f"{reference.width}x{reference.height}" != size:
                return api_error(400, "Inpaint image must match the requested width and height", code="invalid_value", param="input_reference")
        job = self._new_job(model=model, prompt=prompt, seconds=int(seconds), size=size, kind="create")
        job.reference = reference
        return self._after_accept(request, "create", self._video_response(job))

    async def _remix(self, request: web.Request) -> web.StreamResponse:
        rec, early = await self._guard(request, "remix")
        if early is not None:
            return early
        source = self.videos.get(request.match_info["video_id"])
        if source is None or source.deleted:
            return api_error(404, "Video not found.", code="not_found")
        if source.status != "completed":
            return api_error(400, "Only completed videos can be remixed.", code="invalid_state")
        prompt = str(rec.fields.get("prompt") or "")
        if (bad := self._check_model_and_prompt(source.model, prompt)) is not None:
            return bad
        job = self._new_job(model=source.model, prompt=prompt, seconds=source.seconds, size=source.size, kind="remix")
        job.remixed_from_video_id, job.source_id = source.id, source.id
        return self._after_accept(request, "remix", self._video_response(job))

    async def _extend(self, request: web.Request) -> web.StreamResponse:
        rec, early = await self._guard(request, "extend")
        if early is not None:
            return early
        prompt, seconds = str(rec.fields.get("prompt") or ""), str(rec.fields.get("seconds") or "")
        source, upload, bad = self._source(rec)
        if bad is not None:
            return bad
        model = source.model if source is not None else "sora-2"
        if (bad := self._check_model_and_prompt(model, prompt)) is not None:
            return bad
        if model.startswith("sora-2") and seconds not in SORA_EXTEND_SECONDS:
            return api_error(400, f"Invalid value: '{seconds}'.", code="invalid_value", param="seconds")
        base_seconds, size = (source.seconds, source.size) if source is not None else _probe_size(upload, self.scale)  # type: ignore[arg-type]
        job = self._new_job(model=model, prompt=prompt, seconds=base_seconds + int(seconds), size=size, kind="extend")
        job.source_id = source.id if source is not None else None
        job.source_file = upload
        return self._after_accept(request, "extend", self._video_response(job))

    async def _edit(self, request: web.Request) -> web.StreamResponse:
        rec, early = await self._guard(request, "edit")
        if early is not None:
            return early
        prompt = str(rec.fields.get("prompt") or "")
        source, upload, bad = self._source(rec)
        if bad is not None:
            return bad
        model = source.model if source is not None else "sora-2"
        if (bad := self._check_model_and_prompt(model, prompt)) is not None:
            return bad
        seconds, size = (source.seconds, source.size) if source is not None else _probe_size(upload, self.scale)  # type: ignore[arg-type]
        job = self._new_job(model=model, prompt=prompt, seconds=seconds, size=size, kind="edit")
        job.source_id = source.id if source is not None else None
        job.source_file = upload
        return self._after_accept(request, "edit", self._video_response(job))

    async def _retrieve(self, request: web.Request) -> web.StreamResponse:
        _, early = await self._guard(request, "retrieve")
        if early is not None:
            return early
        job = self.videos.get(request.match_info["video_id"])
        if job is None or job.deleted:
            return api_error(404, "Video not found.", code="not_found")
        self._advance(job)
        return self._video_response(job)

    def _advance(self, job: VideoJob) -> None:
        if job.status in ("completed", "failed"):
            return
        job.polls += 1
        if self.advance == "time":
            pct = int(100 * (time.monotonic() - job.started) / max(self.seconds_to_complete, 0.001))
        else:
            pct = int(100 * job.polls / max(self.polls_to_complete, 1))
        if self.hold:
            pct = min(pct, 50)
        if pct < 100:
            job.status, job.progress = "in_progress", max(job.progress, min(pct, 99))
            return
        if job.fail_with is not None:
            code, message = job.fail_with
            job.status, job.error = "failed", {"code": code, "message": message}
            return
        job.status, job.progress = "completed", 100
        job.completed_at = int(time.time())
        job.expires_at = job.completed_at + self.expires_after

    async def _list(self, request: web.Request) -> web.StreamResponse:
        _, early = await self._guard(request, "list")
        if early is not None:
            return early
        limit = int(request.query.get("limit", "20"))
        items = [j for j in self.videos.values() if not j.deleted]
        items.sort(key=lambda j: (j.created_at, list(self.videos).index(j.id)), reverse=request.query.get("order", "desc") == "desc")
        after = request.query.get("after")
        if after:
            ids = [j.id for j in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        page = items[:limit]
        return web.json_response({
            "object": "list", "data": [j.resource() for j in page],
            "first_id": page[0].id if page else None, "last_id": page[-1].id if page else None,
            "has_more": len(items) > limit,
        })  # fmt: skip

    async def _delete(self, request: web.Request) -> web.StreamResponse:
        _, early = await self._guard(request, "delete")
        if early is not None:
            return early
        job = self.videos.get(request.match_info["video_id"])
        if job is None or job.deleted:
            return api_error(404, "Video not found.", code="not_found")
        job.deleted = True
        return web.json_response({"id": job.id, "object": "video.deleted", "deleted": True})

    async def _content(self, request: web.Request) -> web.StreamResponse:
        _, early = await self._guard(request, "content")
        if early is not None:
            return early
        job = self.videos.get(request.match_info["video_id"])
        variant = request.query.get("variant", "video")
        if job is None or job.deleted:
            return api_error(404, "Video not found.", code="not_found")
        if job.expired:
            return api_error(404, "The content for this video has expired.", code="not_found")
        if job.status != "completed":
            return api_error(404, "Video is not ready yet.", code="not_found")
        if variant not in ("video", "thumbnail", "spritesheet"):
            return api_error(400, f"Invalid variant '{variant}'.", code="invalid_value", param="variant")
        mp4 = await self._mp4(job)
        if variant == "video":
            data, mime = mp4.read_bytes(), "video/mp4"
        else:
            image = await asyncio.to_thread(first_frame, mp4)
            out = io.BytesIO()
            image.save(out, "WEBP")
            data, mime = out.getvalue(), "image/webp"
        if self._take_fault("content", ("partial",)) is not None:
            response = web.StreamResponse(headers={"Content-Type": mime, "Content-Length": str(len(data))})
            await response.prepare(request)
            await response.write(data[: len(data) // 2])
            if request.transport is not None:
                request.transport.abort()
            return response
        return web.Response(body=data, content_type=mime)

    async def _mp4(self, job: VideoJob) -> Path:
        if job.mp4 is not None and job.mp4.exists():
            return job.mp4
        dest = self.work_dir / f"{job.id}.mp4"
        width, height = (int(v) for v in job.size.split("x"))
        w, h = _even(width / self.scale), _even(height / self.scale)
        base = job.reference.resize((w, h)) if job.reference is not None else None
        source_mp4 = None
        if job.source_id is not None:
            source_mp4 = await self._mp4(self.videos[job.source_id])
        elif job.source_file is not None:
            source_mp4 = job.source_file
        if job.kind == "extend" and source_mp4 is not None:
            info = await asyncio.to_thread(probe_video, source_mp4)
            extra = max(1, job.seconds - round(info.duration))
            part = self.work_dir / f"{job.id}.ext.mp4"
            await asyncio.to_thread(
                render_clip, part, prompt=job.prompt, seconds=extra, width=info.width, height=info.height,
                fps=self.fps, seed=job.seed,
            )  # fmt: skip
            await asyncio.to_thread(concat_videos, source_mp4, part, dest, self.fps)
        else:
            if source_mp4 is not None:
                info = await asyncio.to_thread(probe_video, source_mp4)
                w, h = info.width, info.height
            await asyncio.to_thread(
                render_clip, dest, prompt=job.prompt, seconds=job.seconds, width=w, height=h,
                fps=self.fps, seed=job.seed, base_image=base,
            )  # fmt: skip
        job.mp4 = dest
        return dest

    # --- images -----------------------------------------------------------------------------

    async def _image(self, request: web.Request) -> web.StreamResponse:
        rec, early = await self._guard(request, "image")
        if early is not None:
            return early
        f = rec.fields
        model, prompt = str(f.get("model") or "dall-e-2"), str(f.get("prompt") or "")
        size, quality = str(f.get("size") or "auto"), str(f.get("quality") or "auto")
        if model in self.retired_models:
            return api_error(404, f"The model `{model}` does not exist or you do not have access to it.", code="model_not_found", param="model")
        if model not in self.image_models:
            return api_error(400, f"Invalid value: '{model}'.", code="invalid_value", param="model")
        if not prompt:
            return api_error(400, "Missing required parameter: 'prompt'.", code="missing_required_parameter", param="prompt")
        if BLOCKED_WORD in prompt.lower():
            return api_error(400, "Your request was rejected as a result of our safety system.", code="moderation_blocked")
        if quality not in IMAGE_QUALITIES:
            return api_error(400, f"Invalid value: '{quality}'.", code="invalid_value", param="quality")
        if "response_format" in f:
            return api_error(400, "Unknown parameter: 'response_format'.", code="unknown_parameter", param="response_format")
        dims = _image_dims(model, size)
        if dims is None:
            return api_error(400, f"Invalid value: '{size}'.", code="invalid_value", param="size")
        width, height = dims
        png = await asyncio.to_thread(_png, width, height, prompt)
        output_tokens = int(IMAGE_TOKENS[quality] * width * height / (1024 * 1024))
        text_tokens = max(1, len(prompt.split()))
        return web.json_response({
            "created": int(time.time()),
            "data": [{"b64_json": base64.b64encode(png).decode()}],
            "size": f"{width}x{height}", "quality": "medium" if quality == "auto" else quality,
            "output_format": "png", "background": "opaque",
            "usage": {
                "input_tokens": text_tokens, "output_tokens": output_tokens, "total_tokens": text_tokens + output_tokens,
                "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": 0},
            },
        })  # fmt: skip

    # --- moderations ------------------------------------------------------------------------

    async def _moderations(self, request: web.Request) -> web.StreamResponse:
        rec, early = await self._guard(request, "moderations")
        if early is not None:
            return early
        model = rec.fields.get("model") or "omni-moderation-latest"
        raw = rec.fields.get("input")
        if not isinstance(model, str) or model not in self.moderation_models:
            return api_error(404, f"The model `{model}` does not exist or you do not have access to it.", code="model_not_found", param="model")
        if raw is None:
            return api_error(400, "Missing required parameter: 'input'.", code="missing_required_parameter", param="input")
        # A string or an array of strings: one result each. Multimodal objects: one result for all.
        if isinstance(raw, str):
            groups: list[list[Any]] = [[{"type": "text", "text": raw}]]
        elif isinstance(raw, list) and raw and all(isinstance(item, str) for item in raw):
            groups = [[{"type": "text", "text": item}] for item in raw]
        elif isinstance(raw, list) and raw and all(isinstance(item, dict) for item in raw):
            groups = [raw]
        else:
            return api_error(400, "Invalid type for 'input': expected a string, an array of strings, or an array of objects.", code="invalid_type", param="input")
        seen: list[dict[str, Any]] = []
        parsed_groups: list[list[dict[str, Any]]] = []
        for group in groups:
            parsed: list[dict[str, Any]] = []
            for item in group:
                entry = _moderation_input(item)
                if isinstance(entry, web.Response):
                    return entry
                if entry["type"] == "image" and not model.startswith("omni-moderation"):
                    return api_error(400, f"The model `{model}` does not support image inputs.", code="invalid_value", param="input")
                parsed.append(entry)
            parsed_groups.append(parsed)
            seen.extend(parsed)
        results = [self._classify(group) for group in parsed_groups]
        self.moderations.append(ModerationCall(model=model, inputs=seen, flagged=[[c for c, hit in r["categories"].items() if hit] for r in results]))
        return web.json_response(
            {"id": f"modr-{secrets.token_hex(12)}", "model": model, "results": results},
            headers={"x-request-id": f"req_{secrets.token_hex(6)}"},
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        """`POST /v1/chat/completions`, with `response_format` json_schema (structured outputs):
        the answer's content is JSON that fits the schema. For a schema with a `scenes` array
        the emulator plans `minItems` scenes from the last user message, deterministically."""
        rec, early = await self._guard(request, "chat")
        if early is not None:
            return early
        model, messages = rec.fields.get("model"), rec.fields.get("messages")
        if not isinstance(model, str) or model not in self.text_models:
            return api_error(404, f"The model `{model}` does not exist or you do not have access to it.", code="model_not_found", param="model")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) and "role" in m for m in messages):
            return api_error(400, "Invalid value for 'messages': expected a non-empty array of messages.", code="invalid_value", param="messages")
        if "temperature" in rec.fields and model.startswith("gpt-5") and rec.fields["temperature"] != 1:
            return api_error(400, "Unsupported value: 'temperature' does not support this value with this model. Only the default (1) value is supported.", code="unsupported_value", param="temperature")
        fmt = rec.fields.get("response_format") or {"type": "text"}
        user = next((str(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
        if self.chat_reply is not None:
            content, self.chat_reply = self.chat_reply, None
        elif fmt.get("type") == "json_schema":
            spec = fmt.get("json_schema") or {}
            schema = spec.get("schema")
            if not isinstance(spec.get("name"), str) or not isinstance(schema, dict):
                return api_error(400, "Missing required parameter: 'response_format.json_schema.name'.", code="missing_required_parameter", param="response_format.json_schema")
            if spec.get("strict") and (schema.get("additionalProperties") is not False or set(schema.get("required", [])) != set(schema.get("properties", {}))):
                return api_error(400, f"Invalid schema for response_format '{spec['name']}': In context=(), 'additionalProperties' is required to be supplied and to be false, and 'required' must list every property.", code="invalid_json_schema", param="response_format")
            content = json.dumps(_fill_schema(schema, user))
        else:
            content = f"(emulator) {user}"
        usage = {"prompt_tokens": sum(len(str(m.get("content", "")).split()) for m in messages), "completion_tokens": len(content.split())}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return web.json_response(
            {
                "id": f"chatcmpl-{secrets.token_hex(12)}", "object": "chat.completion", "created": int(time.time()),
                "model": f"{model}-2025-08-07" if model.startswith("gpt-5") else model,
                "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                             "message": {"role": "assistant", "content": content, "refusal": None, "annotations": []}}],
                "usage": usage, "service_tier": "default", "system_fingerprint": None,
            },
            headers={"x-request-id": f"req_{secrets.token_hex(6)}"},
        )  # fmt: skip

    def _classify(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        """The deterministic classifier: trigger words in text (MODERATION_TRIGGERS) and magenta
        images (MAGENTA_SHARE); one result for all the inputs of a group."""
        hits: set[str] = set()
        for entry in inputs:
            if entry["type"] == "text":
                for word, categories in self.moderation_triggers.items():
                    if re.search(rf"(?<!\w){re.escape(word)}", entry["text"], re.IGNORECASE):
                        hits.update(categories)
            elif entry["magenta"] >= MAGENTA_SHARE:
                hits.add("sexual")
        has_text = any(e["type"] == "text" for e in inputs)
        has_image = any(e["type"] == "image" for e in inputs)
        applied = {
            c: (["text"] if has_text else []) + (["image"] if has_image and c in IMAGE_CATEGORIES else [])
            for c in MODERATION_CATEGORIES
        }  # fmt: skip
        return {
            "flagged": bool(hits),
            "categories": {c: c in hits for c in MODERATION_CATEGORIES},
            # Flagged near certain, the rest near zero; a fixed tiny value per category keeps it stable.
            "category_scores": {c: 0.97 if c in hits else round(1e-5 * (1 + i), 6) for i, c in enumerate(MODERATION_CATEGORIES)},
            "category_applied_input_types": applied,
        }


def _fill_schema(schema: dict[str, Any], text: str, *, index: int = 0) -> Any:
    """A deterministic value that fits a (simple) JSON schema, worded from the user's text."""
    kind = schema.get("type")
    topic = " ".join(text.replace("\n", " ").split())[:200]
    if kind == "object":
        return {name: _fill_schema(sub, text, index=index) for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        count = int(schema.get("minItems", 1) or 1)
        return [_fill_schema(schema.get("items", {"type": "string"}), text, index=i + 1) for i in range(count)]
    if kind in ("integer", "number"):
        return index
    if kind == "boolean":
        return False
    if index:
        return f"Part {index}: {topic}"
    return f"Planned look for: {topic}"


def _moderation_input(item: dict[str, Any]) -> dict[str, Any] | web.Response:
    """One multimodal input checked and decoded: a text, or an image from a data URL (the emulator
    never fetches; an http(s) URL is refused as an image it could not download)."""
    kind = item.get("type")
    if kind == "text":
        if not isinstance(item.get("text"), str):
            return api_error(400, "Invalid 'input': a text input needs a string 'text'.", code="invalid_value", param="input")
        return {"type": "text", "text": item["text"]}
    if kind != "image_url":
        return api_error(400, f"Invalid value: '{kind}'. Supported values are: 'text' and 'image_url'.", code="invalid_value", param="input")
    url = item.get("image_url", {}).get("url") if isinstance(item.get("image_url"), dict) else None
    if not isinstance(url, str):
        return api_error(400, "Invalid 'input': an image_url input needs 'image_url.url'.", code="invalid_value", param="input")
    m = re.fullmatch(r"data:(image/[\w.+-]+);base64,(.*)", url, re.DOTALL)
    if m is None:
        return api_error(400, "Failed to download image from the URL.", code="invalid_image_url", param="input")
    try:
        image = Image.open(io.BytesIO(base64.b64decode(m.group(2), validate=True)))
        image.load()
    except Exception:
        return api_error(400, "The image data is not a valid image.", code="invalid_image_format", param="input")
    return {
        "type": "image", "mime": m.group(1), "format": image.format, "width": image.width, "height": image.height,
        "magenta": _magenta_share(image),
    }  # fmt: skip


def _magenta_share(image: Image.Image) -> float:
    """The share of pixels that are exactly MAGENTA, counted with Pillow's C point operations."""
    r, g, b = image.convert("RGB").split()
    masks = [band.point(lambda v, want=want: 255 if v == want else 0) for band, want in zip((r, g, b), MAGENTA)]
    both = ImageChops.multiply(ImageChops.multiply(masks[0], masks[1]), masks[2])
    return both.histogram()[255] / max(1, image.width * image.height)


def _image_dims(model: str, size: str) -> tuple[int, int] | None:
    if size == "auto":
        return 1024, 1024
    if size in IMAGE_FIXED_SIZES:
        w, h = size.split("x")
        return int(w), int(h)
    m = re.fullmatch(r"(\d+)x(\d+)", size)
    if m is None or not re.match(r"^gpt-image-2(\.5)?(-|$)", model):
        return None
    w, h = int(m.group(1)), int(m.group(2))
    if w % 16 or h % 16 or max(w, h) > 3840 or min(w, h) > 2160 or not (1 / 3 <= w / h <= 3):
        return None
    return w, h


def _png(width: int, height: int, prompt: str) -> bytes:
    seed = sum(prompt.encode()) % 200
    image = Image.new("RGB", (width, height), (30 + seed // 2, 90, 160))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def _probe_size(path: Path, scale: int) -> tuple[int, str]:
    info = probe_video(path)
    return max(1, round(info.duration)), f"{info.width * scale}x{info.height * scale}"


def _even(value: float) -> int:
    return max(2, int(value) // 2 * 2)


def _drop(request: web.Request) -> web.StreamResponse:
    """Close the connection without an answer: the client sees a dropped connection."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=500)


@pytest.fixture
async def openai_server() -> AsyncIterator[OpenAIEmulator]:
    with tempfile.TemporaryDirectory(prefix="openai-emulator-") as work:
        server = OpenAIEmulator(Path(work))
        await server.start()
        try:
            yield server
        finally:
            await server.stop()
