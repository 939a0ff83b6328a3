"""Veo 3.1 on Vertex AI through the official `google-genai` SDK (Vertex mode only).

`models.generate_videos` sends `:predictLongRunning` with the prompt, the first frame, Veo's
own video input (extend), duration, aspect ratio and resolution (from the bot's size), seed,
negative prompt and `generateAudio`; the operation it returns is read with `operations.get`
(`:fetchPredictOperation`) under the shared polling engine. No `storageUri` is sent, so Vertex
returns the video inline and it is written to disk at once.

google-genai 3.x refuses `generate_videos` in Gemini Developer API mode ("only supported in
Gemini Enterprise Agent Platform mode"): without Vertex settings this pipeline is listed but
not configured, with the reason.

Remix is image-to-video from the source's input image or first frame, with the new prompt.
Extend sends the source as Veo's video input when Veo made it (a file beside the operation
marks it), the seconds are what one extension adds (`extend_seconds`, 7) and it fits inline;
otherwise the source's last frame is animated and the clip joined to the source.

Vertex cannot look an operation up by a caller's reference, and the SDK has no cancel for video
operations: an interrupted create is not sent again (as Runway's), and cancel stops polling.
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Unpack

from providers.base import Capability, Operation, RemoteJob, RemoteStatus, VideoRequest, parse_size
from providers.errors import ContentPolicyRejected, GenerationFailed, InvalidRequest, NotConfigured
from providers.google_common import image_jpeg, is_safety, jpeg_bytes, shape_for, span, vertex_client
from providers.google_video import GoogleVideoOptions, GoogleVideoProvider
from providers.media import decode_image, first_frame, last_frame

DEFAULT_MODEL = "veo-3.1-generate-001"
LABEL = "Veo"
MAX_PROMPT_CHARS = 4000


class VeoVideoProvider(GoogleVideoProvider):
    name = "veo"
    label = LABEL
    model_setting = "GOOGLE_VEO_MODEL"
    capabilities = frozenset({Capability.TEXT_TO_VIDEO, Capability.IMAGE_TO_VIDEO, Capability.REMIX, Capability.EXTEND})

    def __init__(
        self,
        *,
        project: str | None,
        location: str,
        work_dir: Path,
        not_configured: str = "",
        access_token: str | None = None,
        model: str = DEFAULT_MODEL,
        extend_seconds: tuple[int, ...] = (7,),
        negative_prompt: str = "",
        poll_seconds: float = 10.0,
        **options: Unpack[GoogleVideoOptions],
    ) -> None:
        super().__init__(work_dir=work_dir, model=model, poll_seconds=poll_seconds, **options)
        self._project = project
        self._location = location
        self._not_configured = not_configured
        self._access_token = access_token
        self.extend_seconds = extend_seconds
        self.negative_prompt = negative_prompt
        # self._outputs holds finished videos (bytes: Vertex returns them inline) by operation name.
        self._failures: dict[str, tuple[str, str]] = {}

    # --- plumbing ------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        if self._not_configured or not self._project:
            raise NotConfigured("Veo is not configured.", provider=self.name, detail=self._not_configured or "GOOGLE_CLOUD_PROJECT is not set")
        if self._client is None:
            self._client = vertex_client(
                project=self._project, location=self._location, access_token=self._access_token,
                base_url=self.base_url, timeout=self._timeout,
            )  # fmt: skip
        return self._client

    # --- checks and prices ---------------------------------------------------------------

    def _extends_natively(self, request: VideoRequest) -> bool:
        """Veo's own video input: for a clip Veo made, by the seconds an extension adds, small
        enough to send inline. Anything else continues from the last frame (and is joined)."""
        source = request.source_video
        return (
            request.seconds in self.extend_seconds and self._ours(request.source_remote_id)
            and source is not None and source.exists() and source.stat().st_size <= self._max_inline_video
        )  # fmt: skip

    def billed_seconds(self, request: VideoRequest) -> int:
        """Remix keeps about the source's length: the nearest duration Veo makes."""
        if request.operation is Operation.REMIX and request.seconds not in self.seconds:
            return min(self.seconds, key=lambda s: (abs(s - request.seconds), -s))
        return request.seconds

    def validate(self, request: VideoRequest) -> None:
        model = self.model_for(request)
        if len(request.prompt) > MAX_PROMPT_CHARS:
            raise InvalidRequest(f"Veo takes prompts of up to {MAX_PROMPT_CHARS} characters.")
        if request.operation in (Operation.REMIX, Operation.EXTEND) and request.source_video is None:
            raise InvalidRequest(f"{request.operation.value.capitalize()} needs the source video, which is missing.")
        if request.operation is Operation.EXTEND and self._extends_natively(request):
            return
        if self.billed_seconds(request) not in self.seconds:
            if request.operation is Operation.EXTEND and self.extend_seconds and self._ours(request.source_remote_id):
                choices = span(tuple(sorted({*self.seconds, *self.extend_seconds})))
                raise InvalidRequest(f"Veo's {model} extends its own clips by {choices} seconds.")
            raise InvalidRequest(f"Veo's {model} makes clips of {span(self.seconds)} seconds.")
        shape_for(request.size, self.sizes, f"Veo's {model}")

    # --- create ----------------------------------------------------------------------------

    async def arguments(self, request: VideoRequest) -> dict[str, Any]:
        """`generate_videos` keyword arguments for one request."""
        from google.genai import types

        model = self.model_for(request)
        config: dict[str, Any] = {"number_of_videos": 1, "generate_audio": bool(request.audio)}
        negative = getattr(request, "negative_prompt", None) or self.negative_prompt
        if negative:
            config["negative_prompt"] = negative
        if request.seed is not None:
            config["seed"] = request.seed % 4_294_967_296
        source: dict[str, Any] = {"prompt": request.prompt}
        if request.operation is Operation.EXTEND and self._extends_natively(request):
            assert request.source_video is not None
            data = await asyncio.to_thread(request.source_video.read_bytes)
            source["video"] = types.Video(video_bytes=data, mime_type="video/mp4")
            config["duration_seconds"] = request.seconds
        else:
            shape = shape_for(request.size, self.sizes, f"Veo's {model}")
            config.update(duration_seconds=self.billed_seconds(request), aspect_ratio=shape.aspect_ratio, resolution=shape.resolution)
            frame = await self._first_frame(request)
            if frame is not None:
                source["image"] = types.Image(image_bytes=frame, mime_type="image/jpeg")
            last = getattr(request, "last_frame", None)
            if last is not None:
                config["last_frame"] = types.Image(image_bytes=await self._jpeg(Path(last), request), mime_type="image/jpeg")
        return {"model": model, "source": types.GenerateVideosSource(**source), "config": types.GenerateVideosConfig(**config)}

    async def _first_frame(self, request: VideoRequest) -> bytes | None:
        width, height = parse_size(request.size)
        if request.operation is Operation.EXTEND:
            assert request.source_video is not None
            image = await asyncio.to_thread(last_frame, request.source_video)
            return await asyncio.to_thread(image_jpeg, image, width, height)
        if request.input_image is not None and request.input_image.exists():
            return await self._jpeg(request.input_image, request)
        if request.operation is Operation.REMIX:
            assert request.source_video is not None
            image = await asyncio.to_thread(first_frame, request.source_video)
            return await asyncio.to_thread(image_jpeg, image, width, height)
        if request.input_image is not None:
            raise InvalidRequest(f"The input image '{request.input_image.name}' is missing.")
        return None

    async def _jpeg(self, path: Path, request: VideoRequest) -> bytes:
        width, height = parse_size(request.size)
        data = await asyncio.to_thread(path.read_bytes)
        await asyncio.to_thread(decode_image, data, name=path.name)
        return await asyncio.to_thread(jpeg_bytes, data, path.name, width, height)

    async def submit(self, request: VideoRequest) -> RemoteJob:
        model = self.model_for(request)
        args = await self.arguments(request)
        models = self.client.aio.models
        operation = await self._create(lambda: models.generate_videos(**args), model)
        name = getattr(operation, "name", None)
        if not name:
            raise GenerationFailed("Vertex accepted the request without an operation name.", remote_code="no_name", provider=self.name)
        self._remember(name, request, model)
        return RemoteJob(id=name, status=RemoteStatus.QUEUED, model=model, note="queued at Google (Veo)", poll_after=self._poll_seconds)

    # --- reads -----------------------------------------------------------------------------

    async def poll(self, remote_id: str) -> RemoteJob:
        from google.genai import types

        try:
            operation = await self.client.aio.operations.get(types.GenerateVideosOperation(name=remote_id))
        except Exception as exc:
            gone = "Vertex no longer knows this operation."
            raise self._read_failed(exc, status=getattr(exc, "code", None), gone=gone) from exc
        if not operation.done:
            return RemoteJob(id=remote_id, status=RemoteStatus.IN_PROGRESS, progress=1, note="rendering at Google (Veo)",
                             poll_after=self._poll_seconds)  # fmt: skip
        error = operation.error
        if error:
            code = str(error.get("code", "")) if isinstance(error, dict) else ""
            message = str(error.get("message", "")) if isinstance(error, dict) else str(error)
            if code == "1" or "cancel" in message.lower():
                return RemoteJob(id=remote_id, status=RemoteStatus.CANCELLED)
            return RemoteJob(id=remote_id, status=RemoteStatus.FAILED, error_code=code or "failed", error_message=message)
        response = operation.response
        videos = (response.generated_videos if response is not None else None) or []
        data = videos[0].video.video_bytes if videos and videos[0].video is not None else None
        if not data:
            reasons = "; ".join((response.rai_media_filtered_reasons or []) if response is not None else [])
            filtered = response is not None and (response.rai_media_filtered_count or 0) > 0
            uri = videos[0].video.uri if videos and videos[0].video is not None else None
            if uri:
                return RemoteJob(id=remote_id, status=RemoteStatus.FAILED, error_code="gcs_output",
                                 error_message=f"Veo wrote the video to {uri}; this bot reads inline videos only.")  # fmt: skip
            return RemoteJob(
                id=remote_id, status=RemoteStatus.FAILED, error_code="rai_filtered" if filtered else "no_video",
                error_message=reasons or ("Veo's safety filters removed the video." if filtered else "Veo returned no video."),
            )  # fmt: skip
        self._outputs[remote_id] = data
        return RemoteJob(id=remote_id, status=RemoteStatus.COMPLETED, progress=100)

    def error_for(self, job: RemoteJob) -> Exception:
        self._outputs.pop(job.id, None)
        message = job.error_message or "Veo could not make this video."
        if job.error_code == "rai_filtered" or is_safety(job.error_message):
            return ContentPolicyRejected(f"Veo refused this: {message}", provider=self.name, detail=job.error_code)
        error = GenerationFailed(message, remote_code=job.error_code, provider=self.name)
        # google.rpc codes 13 (INTERNAL) and 14 (UNAVAILABLE): Google's fault on an operation that
        # ended; a new attempt cannot bill this one twice.
        error.retryable = job.error_code in ("13", "14")
        return error

    async def download(self, remote_id: str, dest: Path) -> None:
        # Taken, not kept: the whole video is in memory until it is written.
        data: bytes = await self._output(remote_id, take=True, gone="Vertex no longer has this video; generate it again.")

        async def write(target: Path) -> None:
            await asyncio.to_thread(target.write_bytes, data)

        await self._save(remote_id, dest, write)

    async def cancel(self, remote_id: str) -> None:
        """google-genai has no cancel for video operations: polling stops and the output is dropped."""
        self._outputs.pop(remote_id, None)

    def _sidecar_name(self, remote_id: str) -> str:
        # An operation name is a long resource path (projects/.../operations/ID); its last part is unique.
        return remote_id.rpartition("/")[2]


__all__ = ["VeoVideoProvider", "DEFAULT_MODEL"]
