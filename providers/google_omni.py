"""Gemini Omni video (`gemini-omni-1.2-flash`, `gemini-omni-1.1-flash`) through the Gemini
Developer API's Interactions API, with the official `google-genai` SDK.

A video is one background interaction: `interactions.create(model, input=[text, image],
response_modalities=["video"], response_format={type: video, aspect_ratio, duration,
resolution, delivery}, background=True)`, then `interactions.get(id)` under the shared
polling engine until it is `completed`; the video is the interaction's last model output
(`output_video`): inline base64 data, or a URI to download (delivery `uri`, the default here,
keeps large files out of the JSON and is streamed to disk).

Remix and extend are new interactions that continue the source's: `previous_interaction_id`
with `generation_config.video_config.task` = `edit` or `extend`. The interaction id is the
job's remote id; a file beside it (`work_dir/ID.json`) marks it as ours, so a source made by
another provider goes as an inline video instead.

Neither create nor get takes a caller's reference, so after a crash between sending a create
and storing the id nothing can be looked up: `find_remote` stays None and the job fails with a
note rather than being sent twice (as Runway's). The SDK's own retries are off (see
`providers.google_common`).
"""
from __future__ import annotations

import asyncio
import base64
import binascii
from pathlib import Path
from typing import Any, Unpack
from urllib.parse import urlsplit

import httpx

from providers.base import Capability, Operation, RemoteJob, RemoteStatus, VideoRequest, parse_size
from providers.downloads import stream_to_file
from providers.errors import ContentPolicyRejected, GenerationFailed, InvalidRequest, NotConfigured
from providers.google_common import gemini_client, is_safety, jpeg_bytes, map_error, shape_for, span
from providers.google_video import GoogleVideoOptions, GoogleVideoProvider
from providers.lazy_http import LazyHttp
from providers.polling import retrying

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
DEFAULT_MODEL = "gemini-omni-1.2-flash"
LABEL = "Gemini"
MAX_PROMPT_CHARS = 4000
#: Interaction states that end it without a video.
_FAILED = {"failed", "incomplete", "budget_exceeded", "requires_action"}


class GeminiOmniVideoProvider(GoogleVideoProvider):
    name = "gemini-video"
    label = LABEL
    model_setting = "GOOGLE_OMNI_MODEL"
    capabilities = frozenset({Capability.TEXT_TO_VIDEO, Capability.IMAGE_TO_VIDEO, Capability.REMIX, Capability.EXTEND})

    def __init__(
        self,
        *,
        api_key: str | None,
        work_dir: Path,
        model: str = DEFAULT_MODEL,
        delivery: str = "uri",
        poll_seconds: float = 5.0,
        **options: Unpack[GoogleVideoOptions],
    ) -> None:
        super().__init__(work_dir=work_dir, model=model, poll_seconds=poll_seconds, **options)
        self._api_key = api_key
        self.delivery = delivery
        self._web = LazyHttp(self._timeout)
        # self._outputs holds the SDK's VideoContent (inline data or a URI) by interaction id.

    # --- plumbing ------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        if not self._api_key:
            raise NotConfigured("Gemini is not configured.", provider=self.name, detail="GEMINI_API_KEY (or GOOGLE_API_KEY) is not set")
        if self._client is None:
            self._client = gemini_client(self._api_key, base_url=self.base_url, timeout=self._timeout)
        return self._client

    @property
    def http(self) -> httpx.AsyncClient:
        """For video URIs: streamed to disk, never held in memory."""
        return self._web.client

    async def aclose(self) -> None:
        await super().aclose()
        await self._web.aclose()

    # --- checks ----------------------------------------------------------------------------

    def validate(self, request: VideoRequest) -> None:
        if len(request.prompt) > MAX_PROMPT_CHARS:
            raise InvalidRequest(f"Gemini takes prompts of up to {MAX_PROMPT_CHARS} characters.")
        if request.operation in (Operation.REMIX, Operation.EXTEND):
            if request.source_video is None and not self._ours(request.source_remote_id):
                raise InvalidRequest(f"{request.operation.value.capitalize()} needs the source video, which is missing.")
            if request.operation is Operation.REMIX:
                return  # the edit keeps the source's length and shape
        model = self.model_for(request)
        if request.seconds not in self.seconds:
            raise InvalidRequest(f"Gemini's {model} makes clips of {span(self.seconds)} seconds.")
        shape_for(request.size, self.sizes, f"Gemini's {model}")

    # --- create ----------------------------------------------------------------------------

    async def body(self, request: VideoRequest) -> dict[str, Any]:
        """The create's arguments (the SDK's keyword arguments, sent as JSON as they are)."""
        model = self.model_for(request)
        content: list[dict[str, Any]] = [{"type": "text", "text": request.prompt}]
        body: dict[str, Any] = {
            "model": model,
            "background": True,
            "response_modalities": ["video", "audio"] if request.audio else ["video"],
        }
        video_format: dict[str, Any] = {"type": "video", "delivery": self.delivery}
        generation: dict[str, Any] = {}
        if request.seed is not None:
            generation["seed"] = request.seed % 2_147_483_648
        if request.operation is Operation.GENERATE:
            shape = shape_for(request.size, self.sizes, f"Gemini's {model}")
            video_format.update(aspect_ratio=shape.aspect_ratio, resolution=shape.resolution, duration=f"{request.seconds}s")
            if request.input_image is not None:
                content.append(await self._image_content(request))
                generation["video_config"] = {"task": "image_to_video"}
            else:
                generation["video_config"] = {"task": "text_to_video"}
        else:
            task = "edit" if request.operation is Operation.REMIX else "extend"
            generation["video_config"] = {"task": task}
            if request.operation is Operation.EXTEND:
                video_format["duration"] = f"{request.seconds}s"
            if self._ours(request.source_remote_id):
                body["previous_interaction_id"] = request.source_remote_id
            else:
                content.append(await self._video_content(request))
        body["input"] = content
        body["response_format"] = video_format
        body["generation_config"] = generation
        return body

    async def _image_content(self, request: VideoRequest) -> dict[str, Any]:
        assert request.input_image is not None
        if not request.input_image.exists():
            raise InvalidRequest(f"The input image '{request.input_image.name}' is missing.")
        data = await asyncio.to_thread(request.input_image.read_bytes)
        width, height = parse_size(request.size)
        jpeg = await asyncio.to_thread(jpeg_bytes, data, request.input_image.name, width, height)
        return {"type": "image", "data": base64.b64encode(jpeg).decode("ascii"), "mime_type": "image/jpeg"}

    async def _video_content(self, request: VideoRequest) -> dict[str, Any]:
        """A source this provider did not make goes inline (the API has no upload for it here)."""
        source = request.source_video
        if source is None or not source.exists():
            raise InvalidRequest(f"{request.operation.value.capitalize()} needs the source video, which is missing.")
        size = source.stat().st_size
        if size > self._max_inline_video:
            raise InvalidRequest(
                f"The source video is {size / 1e6:.1f} MB; Gemini takes at most {self._max_inline_video / 1e6:g} MB "
                "inline. Remix or extend a shorter clip, or one made with --pipeline gemini-video."
            )
        data = await asyncio.to_thread(source.read_bytes)
        return {"type": "video", "data": base64.b64encode(data).decode("ascii"), "mime_type": "video/mp4"}

    async def submit(self, request: VideoRequest) -> RemoteJob:
        model = self.model_for(request)
        body = await self.body(request)
        interactions = self.client.aio.interactions
        interaction = await self._create(lambda: interactions.create(**body), model)
        interaction_id = getattr(interaction, "id", None)
        if not interaction_id:
            raise GenerationFailed("Gemini accepted the request without an interaction id.", remote_code="no_id",
                                   provider=self.name)  # fmt: skip
        self._remember(interaction_id, request, model)
        job = self._translate(interaction)
        return job if job.model else job.model_copy(update={"model": model})

    # --- reads -----------------------------------------------------------------------------

    async def poll(self, remote_id: str) -> RemoteJob:
        try:
            interaction = await self.client.aio.interactions.get(id=remote_id)
        except Exception as exc:
            gone = "Gemini no longer knows this interaction."
            raise self._read_failed(exc, status=getattr(exc, "status_code", None), gone=gone) from exc
        return self._translate(interaction, remote_id)

    def _translate(self, interaction: Any, remote_id: str | None = None) -> RemoteJob:
        rid = getattr(interaction, "id", None) or remote_id or ""
        status = str(getattr(interaction, "status", "") or "")
        model = _text(getattr(interaction, "model", None))
        if status in ("queued", "idle"):
            return RemoteJob(id=rid, status=RemoteStatus.QUEUED, model=model, note="queued at Google", poll_after=self._poll_seconds)
        if status in ("in_progress", "requires_continuation", ""):
            return RemoteJob(id=rid, status=RemoteStatus.IN_PROGRESS, model=model, progress=1,
                             note="rendering at Google", poll_after=self._poll_seconds)  # fmt: skip
        if status == "cancelled":
            return RemoteJob(id=rid, status=RemoteStatus.CANCELLED, model=model)
        if status == "completed":
            video = getattr(interaction, "output_video", None)
            if video is not None and (getattr(video, "data", None) or getattr(video, "uri", None)):
                self._outputs[rid] = video
                return RemoteJob(id=rid, status=RemoteStatus.COMPLETED, progress=100, model=model)
            code, message = _failure(interaction)
            if code or message:
                return RemoteJob(id=rid, status=RemoteStatus.FAILED, model=model, error_code=code or "no_video",
                                 error_message=message)  # fmt: skip
            return RemoteJob(id=rid, status=RemoteStatus.FAILED, model=model, error_code="no_video",
                             error_message="Gemini finished without a video (its output may have been filtered).")  # fmt: skip
        if status in _FAILED:
            code, message = _failure(interaction)
            return RemoteJob(id=rid, status=RemoteStatus.FAILED, model=model, error_code=code or status,
                             error_message=message or f"Gemini ended the interaction ({status}).")  # fmt: skip
        return RemoteJob(id=rid, status=RemoteStatus.IN_PROGRESS, model=model, progress=1, poll_after=self._poll_seconds)

    def error_for(self, job: RemoteJob) -> Exception:
        self._outputs.pop(job.id, None)
        message = job.error_message or "Gemini could not make this video."
        if is_safety(job.error_code, job.error_message) or job.error_code == "no_video":
            return ContentPolicyRejected(f"Gemini refused this: {message}", provider=self.name, detail=job.error_code)
        return GenerationFailed(message, remote_code=job.error_code, provider=self.name)

    async def download(self, remote_id: str, dest: Path) -> None:
        video = await self._output(remote_id, take=False, gone="Gemini no longer has this video; generate it again.")

        async def write(target: Path) -> None:
            data = getattr(video, "data", None)
            if data:
                await asyncio.to_thread(_write_base64, data, target)
                return
            uri = str(video.uri)
            headers = {"x-goog-api-key": self._api_key or ""} if self._same_origin(uri) else {}
            await retrying(
                lambda: stream_to_file(self.http, uri, target, provider=self.name, label=LABEL, headers=headers),
                policy=self.policy, what="gemini download",
            )  # fmt: skip

        await self._save(remote_id, dest, write)

    def _same_origin(self, uri: str) -> bool:
        """The key goes only to the API's own host (the Files API), never to another file host."""
        base = urlsplit(self.base_url or DEFAULT_BASE_URL)
        other = urlsplit(uri)
        return (base.scheme, base.netloc) == (other.scheme, other.netloc)

    async def cancel(self, remote_id: str) -> None:
        try:
            await self.client.aio.interactions.cancel(id=remote_id)
        except Exception as exc:
            status = getattr(exc, "status_code", None)
            if status not in (400, 404, 409):  # already finished or gone: nothing to stop
                raise map_error(exc, provider=self.name, label=LABEL, create=False) from exc
        self._outputs.pop(remote_id, None)


def _failure(interaction: Any) -> tuple[str | None, str | None]:
    """The interaction's own error, else a model output step's error (a google.rpc.Status)."""
    for error in getattr(interaction, "errors", None) or []:
        code, message = getattr(error, "code", None), getattr(error, "message", None)
        if code or message:
            return (str(code) if code else None), (str(message) if message else None)
    for step in reversed(getattr(interaction, "steps", None) or []):
        error = getattr(step, "error", None)
        if error is not None and (getattr(error, "message", None) or getattr(error, "code", None)):
            code = getattr(error, "code", None)
            return (str(code) if code is not None else None), getattr(error, "message", None)
    return None, None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _write_base64(data: object, dest: Path) -> None:
    raw = data if isinstance(data, bytes) else str(data).encode("ascii")
    try:
        decoded = base64.b64decode(raw, validate=False)
    except binascii.Error as exc:
        raise GenerationFailed("Gemini's video data is not readable.", remote_code="bad_data", provider="gemini-video") from exc
    dest.write_bytes(decoded)


__all__ = ["GeminiOmniVideoProvider", "DEFAULT_MODEL", "DEFAULT_BASE_URL"]
