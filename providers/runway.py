"""Runway's developer API through the official `runwayml` SDK.

What is special about Runway, and only that: sizes are "ratios" (`1280:720`), each
model has its own ratios and durations, the first frame goes inline as a data URI
of at most 5 MB (or as an ephemeral upload), tasks report PENDING/THROTTLED/RUNNING,
output URLs expire, failures carry a `failureCode`, and cost comes back in credits.

Remix and extend do not exist as such on Runway; they are built from image-to-video:
remix animates the source's first frame (or its original input image) with the new
prompt, extend animates the source's last frame and appends the clip to the source.

The SDK runs with `max_retries=0`: a create must never be repeated once it may have
reached the server (there is no idempotency key), and reads are retried by
`providers.polling`, the one engine for that.
"""
from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import runwayml
from PIL import Image

from providers.base import Capability, Operation, RemoteJob, RemoteStatus, VideoProvider, VideoRequest, parse_size
from providers.errors import (
    ContentExpired,
    ContentPolicyRejected,
    GenerationFailed,
    InvalidRequest,
    ModelUnavailable,
    NotConfigured,
    ProviderError,
    ProviderInvalidRequest,
    RateLimited,
    TransientError,
    Unavailable,
)
from providers.downloads import stream_to_file
from providers.lazy_http import LazyHttp
from providers.media import concat_videos, crop_to_size, decode_image, first_frame, last_frame
from providers.polling import PollPolicy, retrying
from providers.pricing import (
    RUNWAY_CREDIT_USD,
    RUNWAY_CREDITS_PER_SECOND,
    RUNWAY_UNKNOWN_CREDITS_PER_SECOND,
    credits_to_usd,
    runway_credits,
)

log = logging.getLogger(__name__)

API_VERSION = "2024-11-06"
MAX_PROMPT_CHARS = 1000
QUEUED_NOTE = "queued at the provider"

_GEN4_RATIOS = ("1280:720", "720:1280", "1104:832", "832:1104", "960:960", "1584:672")
_WIDE_TALL = ("1280:720", "720:1280")


@dataclass(frozen=True)
class ModelSpec:
    """What one Runway model accepts; checked before anything is sent or billed."""

    ratios: tuple[str, ...]
    durations: tuple[int, ...]
    #: Ratios for text-to-video; empty when the model only animates images.
    text_ratios: tuple[str, ...] = ()


MODEL_SPECS: dict[str, ModelSpec] = {
    "gen4.5": ModelSpec(_GEN4_RATIOS, tuple(range(2, 11)), text_ratios=_WIDE_TALL),
    "gen4_turbo": ModelSpec(_GEN4_RATIOS, tuple(range(2, 11))),
    "veo3.1": ModelSpec(_WIDE_TALL, (4, 6, 8), text_ratios=_WIDE_TALL),
    "veo3.1_fast": ModelSpec(_WIDE_TALL, (4, 6, 8), text_ratios=_WIDE_TALL),
}


def size_to_ratio(size: str) -> str:
    width, height = parse_size(size)
    return f"{width}:{height}"


def ratio_to_size(ratio: str) -> str:
    return ratio.replace(":", "x")


class RunwayVideoProvider(VideoProvider):
    name = "runway"
    capabilities = frozenset({Capability.TEXT_TO_VIDEO, Capability.IMAGE_TO_VIDEO, Capability.REMIX, Capability.EXTEND})
    default_seconds = 5
    default_size = "1280x720"

    def __init__(
        self,
        *,
        api_secret: str | None,
        work_dir: Path,
        base_url: str | None = None,
        api_version: str = API_VERSION,
        text_model: str = "gen4.5",
        image_model: str = "gen4_turbo",
        credits_per_second: dict[str, float] | None = None,
        unknown_credits_per_second: float = RUNWAY_UNKNOWN_CREDITS_PER_SECOND,
        credit_usd: float = RUNWAY_CREDIT_USD,
        max_data_uri_bytes: int = 5_000_000,
        retired_models: frozenset[str] = frozenset({"gen3a_turbo"}),
        poll_seconds: float = 5.0,
        timeout: float = 60.0,
        policy: PollPolicy | None = None,
    ) -> None:
        self.default_model = image_model
        self.text_model = text_model
        self.image_model = image_model
        self._api_secret = api_secret
        self._base_url = base_url
        self._api_version = api_version
        self._credits = dict(credits_per_second if credits_per_second is not None else RUNWAY_CREDITS_PER_SECOND)
        self._unknown_rate = unknown_credits_per_second
        self._credit_usd = credit_usd
        self._max_data_uri = max_data_uri_bytes
        self._retired = retired_models
        self._poll_seconds = poll_seconds
        self._timeout = timeout
        #: For the reads this provider repeats itself (uploads, fresh output URLs).
        self.policy = policy or PollPolicy()
        self.work_dir = work_dir
        self._client: runwayml.AsyncRunwayML | None = None
        self._web = LazyHttp(timeout)
        #: Output URLs from the last poll; they expire, so a restart reads the task again.
        self._outputs: dict[str, list[str]] = {}

    # --- clients ---------------------------------------------------------------------------

    @property
    def client(self) -> runwayml.AsyncRunwayML:
        if self._api_secret is None:
            raise NotConfigured("Runway is not configured.", provider=self.name, detail="RUNWAYML_API_SECRET is not set")
        if self._client is None:
            self._client = runwayml.AsyncRunwayML(
                api_key=self._api_secret,
                base_url=self._base_url,
                runway_version=self._api_version,
                max_retries=0,
                timeout=self._timeout,
            )
        return self._client

    @property
    def http(self) -> httpx.AsyncClient:
        """For output downloads: signed CDN URLs that take no API key."""
        return self._web.client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
        await self._web.aclose()

    # --- checks and prices ------------------------------------------------------------------

    def model_for(self, request: VideoRequest) -> str:
        if request.model:
            return request.model
        text_only = request.operation is Operation.GENERATE and request.input_image is None
        return self.text_model if text_only else self.image_model

    def validate(self, request: VideoRequest) -> None:
        model = self.model_for(request)
        if model in self._retired:
            raise ModelUnavailable(f"Runway retired the model '{model}'.", provider=self.name)
        if len(request.prompt) > MAX_PROMPT_CHARS:
            raise InvalidRequest(f"Runway takes prompts of up to {MAX_PROMPT_CHARS} characters.")
        if request.operation in (Operation.REMIX, Operation.EXTEND) and request.source_video is None:
            raise InvalidRequest(f"{request.operation.value.capitalize()} needs the source video, which is missing.")
        ratio = size_to_ratio(request.size)
        text_only = request.operation is Operation.GENERATE and request.input_image is None
        spec = MODEL_SPECS.get(model)
        if spec is None:
            # Any Runway model id may be asked for; the API checks what we cannot know.
            if not 1 <= request.seconds <= 60:
                raise InvalidRequest("Runway clips last 1 to 60 seconds.")
            return
        if text_only and not spec.text_ratios:
            raise InvalidRequest(
                f"Runway's {model} animates an image; for text alone use {self.text_model}, or attach an image."
            )
        ratios = spec.text_ratios if text_only else spec.ratios
        if ratio not in ratios:
            sizes = ", ".join(ratio_to_size(r) for r in ratios)
            raise InvalidRequest(f"Runway's {model} makes videos of size {sizes}.")
        if request.seconds not in spec.durations:
            raise InvalidRequest(f"Runway's {model} makes clips of {_span(spec.durations)} seconds.")

    def estimate_cost(self, request: VideoRequest) -> float | None:
        model = self.model_for(request)
        return credits_to_usd(runway_credits(model, request.seconds, self._credits, self._unknown_rate), self._credit_usd)

    # --- create ----------------------------------------------------------------------------

    async def submit(self, request: VideoRequest) -> RemoteJob:
        model = self.model_for(request)
        ratio = size_to_ratio(request.size)
        common: dict[str, Any] = {"model": model, "prompt_text": request.prompt, "ratio": ratio, "duration": request.seconds}
        if request.seed is not None:
            common["seed"] = request.seed % 4_294_967_296
        image = await self._first_frame_source(request)
        client = self.client
        if image is None:
            create = lambda: client.text_to_video.create(**common)  # noqa: E731
        else:
            prompt_image = await self._prompt_image(image, ratio)
            create = lambda: client.image_to_video.create(prompt_image=prompt_image, **common)  # noqa: E731
        # One create request. A 429 or 503 is a refusal (nothing was made) and safe to repeat;
        # anything ambiguous may have made, and billed, a task, so it is never repeated.
        created = await retrying(lambda: self._create_once(create), policy=self.policy, attempts=3, what="runway create", provider=self.name)
        return self._accepted(created.id, request, model)

    async def _create_once(self, create: Any) -> Any:
        try:
            return await create()
        except runwayml.APIError as exc:
            raise self._map_create_error(exc) from exc

    def _accepted(self, task_id: str, request: VideoRequest, model: str) -> RemoteJob:
        if request.operation is Operation.EXTEND and request.source_video is not None:
            # The download joins the new clip to the source; remember it across restarts.
            self._sidecar(task_id).write_text(json.dumps({"extend_source": str(request.source_video)}), encoding="utf-8")
        return RemoteJob(id=task_id, status=RemoteStatus.QUEUED, model=model, note=QUEUED_NOTE, poll_after=self._poll_seconds)

    async def _first_frame_source(self, request: VideoRequest) -> Image.Image | None:
        """The image Runway animates: the input, or for remix/extend a frame of the source."""
        if request.operation is Operation.EXTEND:
            assert request.source_video is not None
            return await asyncio.to_thread(last_frame, request.source_video)
        if request.input_image is not None and request.input_image.exists():
            data = await asyncio.to_thread(request.input_image.read_bytes)
            return decode_image(data, name=request.input_image.name)
        if request.operation is Operation.REMIX:
            # No original input image: the source video's first frame is the closest thing to it.
            assert request.source_video is not None
            return await asyncio.to_thread(first_frame, request.source_video)
        if request.input_image is not None:
            raise InvalidRequest(f"The input image '{request.input_image.name}' is missing.")
        return None

    async def _prompt_image(self, image: Image.Image, ratio: str) -> str:
        """A data URI when the JPEG fits the inline limit, else a `runway://` ephemeral upload."""
        width, height = (int(v) for v in ratio.split(":"))
        data, fits = await asyncio.to_thread(_encode_jpeg, image, width, height, self._max_data_uri)
        if fits:
            return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")

        async def upload() -> str:
            try:
                result = await self.client.uploads.create_ephemeral(file=("first_frame.jpg", data, "image/jpeg"))
            except runwayml.APIError as exc:
                raise self._map_read_error(exc) from exc
            return result.uri

        return await retrying(upload, policy=self.policy, attempts=3, what="runway upload")

    # --- reads -----------------------------------------------------------------------------

    async def poll(self, remote_id: str) -> RemoteJob:
        try:
            task = await self.client.tasks.retrieve(remote_id)
        except runwayml.APIError as exc:
            raise self._map_read_error(exc, remote_id=remote_id) from exc
        return self._translate(task)

    def _translate(self, task: Any) -> RemoteJob:
        status = task.status
        if status in ("PENDING", "THROTTLED"):
            return RemoteJob(id=task.id, status=RemoteStatus.QUEUED, note=QUEUED_NOTE, poll_after=self._poll_seconds)
        if status == "RUNNING":
            progress = int(round(float(task.progress or 0) * 100))
            return RemoteJob(
                id=task.id, status=RemoteStatus.IN_PROGRESS, progress=min(max(progress, 0), 99), poll_after=self._poll_seconds
            )
        cost = credits_to_usd(task.cost.credits, self._credit_usd) if getattr(task, "cost", None) else None
        if status == "SUCCEEDED":
            self._outputs[task.id] = list(task.output)
            return RemoteJob(id=task.id, status=RemoteStatus.COMPLETED, progress=100, cost=cost)
        if status == "FAILED":
            return RemoteJob(
                id=task.id, status=RemoteStatus.FAILED, cost=cost,
                error_code=task.failure_code, error_message=task.failure,
            )  # fmt: skip
        return RemoteJob(id=task.id, status=RemoteStatus.CANCELLED, cost=cost)

    def error_for(self, job: RemoteJob) -> Exception:
        code = job.error_code or ""
        message = job.error_message or "Runway could not generate this video."
        if "SAFETY" in code.upper():
            return ContentPolicyRejected(message, provider=self.name, detail=code)
        error = GenerationFailed(message, remote_code=code or None, provider=self.name)
        if code.upper().startswith("INTERNAL"):
            # Runway's own fault on a finished task: one new attempt cannot bill this one twice.
            error.retryable = True
        return error

    async def download(self, remote_id: str, dest: Path) -> None:
        urls = self._outputs.get(remote_id) or await self._fresh_outputs(remote_id)
        sidecar = self._read_sidecar(remote_id)
        target = dest.with_name(dest.name + ".segment.mp4") if sidecar.get("extend_source") else dest
        try:
            await self._stream(urls[0], target)
        except ContentExpired:
            # Signed URLs expire; reading the task again signs fresh ones.
            await self._stream((await self._fresh_outputs(remote_id))[0], target)
        if sidecar.get("extend_source"):
            try:
                await asyncio.to_thread(concat_videos, Path(sidecar["extend_source"]), target, dest)
            finally:
                target.unlink(missing_ok=True)

    async def _fresh_outputs(self, remote_id: str) -> list[str]:
        job = await self.poll(remote_id)
        urls = self._outputs.get(remote_id)
        if job.status is not RemoteStatus.COMPLETED or not urls:
            raise ContentExpired("Runway no longer has this video; generate it again.", provider=self.name)
        return urls

    async def _stream(self, url: str, dest: Path) -> None:
        await stream_to_file(self.http, url, dest, provider=self.name, label="Runway")

    async def cancel(self, remote_id: str) -> None:
        try:
            await self.client.tasks.delete(remote_id)
        except runwayml.NotFoundError:
            pass  # already gone
        except runwayml.APIError as exc:
            raise self._map_read_error(exc, remote_id=remote_id) from exc
        self.forget(remote_id)

    def forget(self, remote_id: str) -> None:
        self._outputs.pop(remote_id, None)
        self._sidecar(remote_id).unlink(missing_ok=True)

    # --- errors ----------------------------------------------------------------------------

    def _map_create_error(self, exc: runwayml.APIError) -> Exception:
        if isinstance(exc, runwayml.APIStatusError):
            status = exc.status_code
            if status == 429:
                return RateLimited("Runway is over its limit.", retry_after=_retry_after(exc), provider=self.name, detail=_body(exc))
            if status == 503:
                return TransientError("Runway is unavailable.", provider=self.name, detail=_body(exc))
            if status >= 500:
                return _ambiguous(self.name, f"create {status}: {_body(exc)}")
            return self._map_client_error(exc)
        if isinstance(exc, runwayml.APIConnectionError) and isinstance(exc.__cause__, httpx.ConnectError):
            return TransientError("Runway is not reachable.", provider=self.name, detail=repr(exc.__cause__))
        return _ambiguous(self.name, f"create: {exc!r}")

    def _map_read_error(self, exc: runwayml.APIError, *, remote_id: str | None = None) -> Exception:
        if isinstance(exc, runwayml.APIStatusError):
            status = exc.status_code
            if status == 429:
                return RateLimited("Runway is busy.", retry_after=_retry_after(exc), provider=self.name, detail=_body(exc))
            if status >= 500:
                return TransientError("Runway is having trouble.", provider=self.name, detail=f"{status}: {_body(exc)}")
            if status == 404 and remote_id is not None:
                return GenerationFailed("Runway no longer knows this task.", remote_code="not_found", provider=self.name)
            return self._map_client_error(exc)
        return TransientError("Runway did not answer.", provider=self.name, detail=repr(exc))

    def _map_client_error(self, exc: runwayml.APIStatusError) -> Exception:
        status, body = exc.status_code, _body(exc)
        if status in (401, 403):
            return NotConfigured("Runway refused the API key.", provider=self.name, detail=f"{status}: {body}")
        lower = body.lower()
        if "retired" in lower or "deprecated" in lower or status == 404:
            return ModelUnavailable("Runway does not serve this model any more.", provider=self.name, detail=body)
        if "safety" in lower or "moderation" in lower:
            return ContentPolicyRejected(_error_text(exc) or "", provider=self.name, detail=body)
        return ProviderInvalidRequest(
            f"Runway refused the request: {_error_text(exc) or 'invalid parameters'}.", provider=self.name, detail=body
        )

    # --- state on disk ---------------------------------------------------------------------

    def _sidecar(self, remote_id: str) -> Path:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        return self.work_dir / f"{remote_id}.json"

    def _read_sidecar(self, remote_id: str) -> dict[str, str]:
        path = self._sidecar(remote_id)
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _encode_jpeg(image: Image.Image, width: int, height: int, limit: int) -> tuple[bytes, bool]:
    """Smart-cropped to the ratio at the output resolution, as the best JPEG whose data URI fits."""
    fitted = crop_to_size(image, width, height)
    data = b""
    for quality in (92, 85, 75, 60, 45):
        out = io.BytesIO()
        fitted.save(out, "JPEG", quality=quality, optimize=True)
        data = out.getvalue()
        if _data_uri_len(data) <= limit:
            return data, True
    return data, False


def _data_uri_len(data: bytes) -> int:
    return len("data:image/jpeg;base64,") + 4 * ((len(data) + 2) // 3)


def _ambiguous(provider: str, detail: str) -> ProviderError:
    return ProviderError(
        "Runway did not confirm the job, so it may or may not have started. It was not sent again, "
        "so you are not billed twice: re-roll to try again.",
        provider=provider,
        detail=detail,
    )


def _body(exc: runwayml.APIStatusError) -> str:
    try:
        return exc.response.text[:500]
    except Exception:  # a streamed body may be unreadable; the status is enough
        return ""


def _error_text(exc: runwayml.APIStatusError) -> str | None:
    body = exc.body
    if isinstance(body, dict):
        for key in ("error", "message"):
            if isinstance(body.get(key), str):
                return str(body[key])
    return None


def _retry_after(exc: runwayml.APIStatusError) -> float | None:
    value = exc.response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _span(values: tuple[int, ...]) -> str:
    ordered = sorted(values)
    if ordered == list(range(ordered[0], ordered[-1] + 1)) and len(ordered) > 2:
        return f"{ordered[0]} to {ordered[-1]}"
    return ", ".join(str(v) for v in ordered[:-1]) + f" or {ordered[-1]}"


__all__ = ["RunwayVideoProvider", "MODEL_SPECS", "size_to_ratio", "ratio_to_size", "Unavailable"]
