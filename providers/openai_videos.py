"""The OpenAI Videos protocol (`/v1/videos`): Sora 2 and the gateways that serve the same API.

Translation only: cadence, retries and the overall timeout are `providers.polling`'s.
Create calls are sent exactly once (the client has the SDK's retries off), so a 5xx or a
dropped connection after the server accepted a job never bills a second one.
"""
from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import openai
from openai.types import Video

from providers.base import Capability, Operation, RemoteJob, RemoteStatus, VideoProvider, VideoRequest, parse_size
from providers.errors import (
    ContentExpired,
    ContentPolicyRejected,
    GenerationFailed,
    InvalidRequest,
    NotConfigured,
    ProviderError,
    RemoteCancelled,
    Unavailable,
    VideobotError,
)
from providers.media import crop_to_size, decode_image
from providers.openai_common import is_policy_code, make_client, map_error, poll_after_seconds, reraise
from providers.polling import PollPolicy, retrying

T = TypeVar("T")

#: What OpenAI's own sora-2* models accept; gateways' models are passed through unchecked.
SORA_SECONDS = (4, 8, 12)
SORA_EXTEND_SECONDS = (4, 8, 12, 16, 20)
SORA_SIZES = ("720x1280", "1280x720", "1024x1792", "1792x1024")
_CHUNK = 1024 * 1024

_STATUS = {
    "queued": RemoteStatus.QUEUED,
    "in_progress": RemoteStatus.IN_PROGRESS,
    "completed": RemoteStatus.COMPLETED,
    "failed": RemoteStatus.FAILED,
}


def is_sora_model(model: str) -> bool:
    return model.startswith("sora-2")


class OpenAIVideoProvider(VideoProvider):
    name = "sora"
    capabilities = frozenset({Capability.TEXT_TO_VIDEO, Capability.IMAGE_TO_VIDEO, Capability.REMIX, Capability.EXTEND})
    continues_source = True
    default_seconds = 4
    default_size = "1280x720"

    def __init__(
        self,
        *,
        api_key: str | None,
        base_url: str | None = None,
        model: str = "sora-2",
        timeout: float = 60.0,
        prices: dict[str, float] | None = None,
        max_image_bytes: int = 20_000_000,
        policy: PollPolicy | None = None,
        name: str | None = None,
    ) -> None:
        if name:
            self.name = name
        self.default_model = model
        self._api_key = api_key
        self._base_url = base_url
        self._timeout = timeout
        self._prices = dict(prices or {})
        self._max_image_bytes = max_image_bytes
        #: For the calls this provider retries itself (thumbnail, admin reads); the runner passes its own to the engine.
        self.policy = policy or PollPolicy()
        self._client: openai.AsyncOpenAI | None = None

    @property
    def client(self) -> openai.AsyncOpenAI:
        if self._client is None:
            if not self._api_key:
                raise NotConfigured(
                    f"The {self.name} pipeline is not configured.",
                    provider=self.name,
                    detail="set OPENAI_API_KEY (or OPENAI_VIDEO_API_KEY)",
                )
            self._client = make_client(self._api_key, self._base_url, self._timeout)
        return self._client

    # --- before sending -------------------------------------------------------------------

    def validate(self, request: VideoRequest) -> None:
        model = request.model or self.default_model
        width, height = parse_size(request.size)
        if request.operation is Operation.EXTEND:
            if request.source_remote_id is None and request.source_video is None:
                raise InvalidRequest("Extend needs the source video, which is missing.")
            if is_sora_model(model) and request.seconds not in SORA_EXTEND_SECONDS:
                raise InvalidRequest(f"{model} extends by {_choices(SORA_EXTEND_SECONDS)} seconds.")
            return
        if request.operation is Operation.REMIX:
            if request.source_remote_id is None and request.source_video is None:
                raise InvalidRequest("Remix needs the source video, which is missing.")
            return  # the remix keeps the source's length and size
        if is_sora_model(model):
            if request.seconds not in SORA_SECONDS:
                raise InvalidRequest(f"{model} makes clips of {_choices(SORA_SECONDS)} seconds.")
            if f"{width}x{height}" not in SORA_SIZES:
                raise InvalidRequest(f"{model} makes videos of size {', '.join(SORA_SIZES)}.")
        elif request.seconds < 1:
            raise InvalidRequest("A clip needs at least 1 second.")

    def estimate_cost(self, request: VideoRequest) -> float | None:
        price = self._prices.get(request.model or self.default_model)
        return None if price is None else round(price * request.seconds, 4)

    # --- create ---------------------------------------------------------------------------

    async def submit(self, request: VideoRequest) -> RemoteJob:
        """Exactly one create request; its failures are mapped, never retried here."""
        try:
            video, headers = await self._create(request)
        except Exception as exc:
            reraise(exc, provider=self.name, what=f"create ({request.operation.value})")
        return self._translate(video, headers)

    async def _create(self, request: VideoRequest) -> tuple[Video, Any]:
        videos = self.client.videos.with_raw_response
        model = request.model or self.default_model
        if request.operation is Operation.REMIX and request.source_remote_id:
            raw = await videos.remix(request.source_remote_id, prompt=request.prompt)
        elif request.operation is Operation.REMIX:
            # The source is not on this server (made elsewhere): edit an uploaded copy instead.
            raw = await videos.edit(prompt=request.prompt, video=_upload(request.source_video, "video/mp4"))
        elif request.operation is Operation.EXTEND and request.source_remote_id:
            # openai 3.54's `videos.extend(video={"id": ...})` refuses the dict before sending
            # (it expects a file there); the protocol takes it as JSON, so send that request directly.
            video = await self.client.post(
                "/videos/extensions",
                cast_to=Video,
                body={"prompt": request.prompt, "seconds": str(request.seconds), "video": {"id": request.source_remote_id}},
            )
            return video, None  # the first poll brings the poll-after hint
        elif request.operation is Operation.EXTEND:
            raw = await videos.extend(
                prompt=request.prompt, seconds=str(request.seconds),  # type: ignore[arg-type]
                video=_upload(request.source_video, "video/mp4"),
            )  # fmt: skip
        else:
            fields: dict[str, Any] = {"prompt": request.prompt, "model": model, "seconds": str(request.seconds), "size": request.size}
            if request.input_image is not None:
                # Uploaded as a file: 3.54 also refuses `input_reference={"image_url": ...}` before sending.
                fields["input_reference"] = await asyncio.to_thread(self._reference_image, request)
            raw = await videos.create(**fields)
        return await _parsed(raw), raw.headers

    def _reference_image(self, request: VideoRequest) -> tuple[str, bytes, str]:
        """The input image cropped and resized to the requested size (the API requires it to match)."""
        assert request.input_image is not None
        path = request.input_image
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InvalidRequest(f"Cannot read the input image '{path.name}'.") from exc
        if len(data) > self._max_image_bytes:
            raise InvalidRequest(f"The input image is {len(data) / 1e6:.1f} MB; the limit is {self._max_image_bytes / 1e6:g} MB.")
        image = crop_to_size(decode_image(data, name=path.name), *request.dimensions)
        out = io.BytesIO()
        image.save(out, "PNG")
        return ("reference.png", out.getvalue(), "image/png")

    # --- after create ---------------------------------------------------------------------

    async def poll(self, remote_id: str) -> RemoteJob:
        try:
            raw = await self.client.videos.with_raw_response.retrieve(remote_id)
        except openai.NotFoundError as exc:
            # Deleted on the server (an operator, `videobot remote delete`) while we waited.
            raise RemoteCancelled(
                "The provider no longer has this job.", provider=self.name, detail=f"retrieve {remote_id}: 404"
            ) from exc
        except Exception as exc:
            reraise(exc, provider=self.name, what=f"retrieve {remote_id}")
        return self._translate(await _parsed(raw), raw.headers)

    async def download(self, remote_id: str, dest: Path) -> None:
        """Stream the MP4 to `dest` chunk by chunk; safe to call again (the file is rewritten)."""
        await self._stream_content(remote_id, "video", dest)

    async def download_thumbnail(self, remote_id: str, dest: Path) -> bool:
        try:
            data = await retrying(lambda: self._read_content(remote_id, "thumbnail"), policy=self.policy, attempts=3, what="thumbnail")
            image = await asyncio.to_thread(decode_image, data, name="thumbnail")
        except VideobotError:
            return False  # the runner falls back to the first frame
        await asyncio.to_thread(image.save, dest, "JPEG", quality=85)
        return True

    async def cancel(self, remote_id: str) -> None:
        """DELETE the remote video: the protocol has no separate cancel."""
        try:
            await self.client.videos.delete(remote_id)
        except openai.NotFoundError:
            return  # already gone
        except Exception as exc:
            reraise(exc, provider=self.name, what=f"delete {remote_id}")

    def error_for(self, job: RemoteJob) -> Exception:
        message = job.error_message or "The provider could not generate this video."
        if is_policy_code(job.error_code):
            return ContentPolicyRejected(message, provider=self.name, detail=f"job failed: {job.error_code}")
        return GenerationFailed(message, remote_code=job.error_code, provider=self.name)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    # --- after a crash ----------------------------------------------------------------------

    #: How long after a create was sent a list that lacks it is taken as proof it never arrived.
    #: The API creates synchronously: a request cut off by our crash was either made by then or never.
    ABSENCE_GRACE_SECONDS = 10.0
    proves_absence = True

    async def find_remote(
        self,
        client_ref: str,
        *,
        request: VideoRequest | None = None,
        sent_at: float | None = None,
        exclude: frozenset[str] = frozenset(),
    ) -> RemoteJob | None:
        """The protocol has no client reference, so match what it does return: the prompt, model,
        size and seconds (or the remix source), created after the create was sent, and owned by
        no other job. Exactly one match is adopted; two are refused as ambiguous."""
        if request is None or sent_at is None:
            raise Unavailable("Cannot look for the video without the request.", provider=self.name)
        model = request.model or self.default_model

        def matches(video: Video) -> bool:
            if video.id in exclude or video.created_at < sent_at - 5 or (video.prompt or "") != request.prompt:
                return False
            if request.operation is Operation.REMIX and request.source_remote_id:
                return video.remixed_from_video_id == request.source_remote_id
            if request.operation is not Operation.GENERATE:
                return True  # extend/edit keep the source's size; the prompt and time are the tag
            return video.model == model and str(video.size) == request.size and str(video.seconds) == str(request.seconds)

        found = [video for video in await self.list_remote(limit=100) if matches(video)]
        wait = sent_at + self.ABSENCE_GRACE_SECONDS - time.time()
        if not found and wait > 0:
            # A miss is proof only once a create cut off by the crash would have been made: look again then.
            await asyncio.sleep(wait)
            found = [video for video in await self.list_remote(limit=100) if matches(video)]
        if len(found) > 1:
            raise Unavailable(
                "More than one video matches the interrupted create.", provider=self.name,
                detail=f"candidates {[v.id for v in found]} for {client_ref}",
            )  # fmt: skip
        return self._translate(found[0], None) if found else None

    # --- admin (videobot remote ...) ------------------------------------------------------

    async def list_remote(self, limit: int = 20, *, page_size: int = 100) -> list[Video]:
        """Newest first, following the `after` cursor across pages until `limit`."""

        async def page() -> list[Video]:
            found: list[Video] = []
            async for video in self.client.videos.list(limit=min(limit, page_size, 100), order="desc"):
                found.append(video)
                if len(found) >= limit:
                    break
            return found

        return await retrying(lambda: self._call(page, "list"), policy=self.policy, attempts=3, what="list")

    async def show_remote(self, remote_id: str) -> Video:
        return await retrying(
            lambda: self._call(lambda: self.client.videos.retrieve(remote_id), f"retrieve {remote_id}"),
            policy=self.policy, attempts=3, what="retrieve",
        )  # fmt: skip

    async def delete_remote(self, remote_id: str) -> bool:
        result = await self._call(lambda: self.client.videos.delete(remote_id), f"delete {remote_id}")
        return bool(result.deleted)

    # --- helpers --------------------------------------------------------------------------

    async def _call(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        try:
            return await call()
        except Exception as exc:
            reraise(exc, provider=self.name, what=what)

    async def _stream_content(self, remote_id: str, variant: str, dest: Path) -> None:
        try:
            async with self.client.videos.with_streaming_response.download_content(remote_id, variant=variant) as response:  # type: ignore[arg-type]
                with dest.open("wb") as out:
                    async for chunk in response.iter_bytes(_CHUNK):
                        out.write(chunk)
        except openai.NotFoundError as exc:
            raise await self._gone(remote_id, exc) from exc
        except Exception as exc:
            reraise(exc, provider=self.name, what=f"download {remote_id} {variant}")

    async def _read_content(self, remote_id: str, variant: str) -> bytes:
        try:
            async with self.client.videos.with_streaming_response.download_content(remote_id, variant=variant) as response:  # type: ignore[arg-type]
                return await response.read()
        except Exception as exc:
            reraise(exc, provider=self.name, what=f"download {remote_id} {variant}")

    async def _gone(self, remote_id: str, exc: openai.NotFoundError) -> Exception:
        """A 404 for the content of a finished job: say whether (and when) it expired."""
        try:
            video = await self.client.videos.retrieve(remote_id)
        except openai.NotFoundError:
            return ContentExpired(
                "The provider no longer has this video (it was deleted or expired). Generate it again.",
                provider=self.name, detail=f"content and job {remote_id}: 404",
            )  # fmt: skip
        except Exception:
            video = None
        expires = video.expires_at if video is not None else None
        if expires is not None and expires <= time.time():
            when = datetime.fromtimestamp(expires, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            return ContentExpired(
                f"The provider deleted this video when it expired ({when}). Generate it again.",
                provider=self.name, detail=f"content {remote_id}: 404 after expires_at",
            )  # fmt: skip
        return map_error(exc, provider=self.name, what=f"download {remote_id}")

    def _translate(self, video: Video, headers: Any) -> RemoteJob:
        status = _STATUS.get(video.status)
        if status is None:
            raise ProviderError(f"The provider reported an unknown status '{video.status}'.", provider=self.name)
        error = video.error
        note = "queued at the provider" if status is RemoteStatus.QUEUED else None
        return RemoteJob(
            id=video.id,
            status=status,
            progress=max(0, min(100, int(video.progress or 0))),
            model=str(video.model) if video.model else None,
            error_code=error.code if error is not None else None,
            error_message=error.message if error is not None else None,
            # The protocol reports no price: the runner keeps the estimate as the cost.
            poll_after=poll_after_seconds(headers),
            note=note,
        )


async def _parsed(raw: Any) -> Video:
    result = raw.parse()
    if asyncio.iscoroutine(result):
        result = await result
    return result  # type: ignore[no-any-return]


def _upload(path: Path | None, mime: str) -> tuple[str, Any, str]:
    if path is None:
        raise InvalidRequest("The source video is missing.")
    try:
        return (path.name, path.read_bytes(), mime)
    except OSError as exc:
        raise InvalidRequest("The source video is no longer on disk.") from exc


def _choices(values: tuple[int, ...]) -> str:
    return ", ".join(str(v) for v in values[:-1]) + f" or {values[-1]}"
