"""Kling's own API (api-singapore.klingai.com), with httpx and a PyJWT-signed token.

What is special about Kling, and only that:

- Every request carries `Authorization: Bearer <JWT>`: HS256 over `iss` = the access key,
  `exp` = now + 30 min, `nbf` = now - 5 s, signed with the secret key. The token is made here
  and renewed before it runs out (and at once when Kling says it expired, code 1004).
- Creates (`POST /v1/videos/text2video`, `/v1/videos/image2video` with `image` and the end
  frame `image_tail`, `/v1/videos/video-extend` with the source's `video_id`) take our job id as
  `external_task_id`, unique per account, and a task can be read back by it
  (`GET /v1/videos/{kind}?external_task_id=…`). So after a crash between sending a create and
  storing its task id, `find_remote` finds the task the create made, or proves that none was made
  (`proves_absence`): a restarted bot adopts the interrupted create and never sends it twice.
- A task is `submitted`, `processing`, `succeed` or `failed` (with `task_status_msg`); each kind
  of task is read under its own path, so our remote id is `{kind}:{task_id}`.
- Errors are `{code, message, request_id}` with Kling's own codes (1000-1004 auth, 1100-1103
  account, 1200-1203 request, 1300-1304 policy and limits, 5000-5002 server), mapped below.
- There is no cancel call: a cancelled job's task runs to its end at Kling (and is billed).

Prices are data (`KLING_PRICES`: USD per second by `model@mode`, defaults in `PRICES`).
Extend uses Kling's own video extension when the source is a Kling task of a model that has it
(`MODEL_SPECS[...].extend`); otherwise the source's last frame is animated and the new clip
joined to the source, as for Runway.
"""
from __future__ import annotations

import asyncio
import base64
import io
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
from PIL import Image

from providers.base import Capability, Operation, RemoteJob, RemoteStatus, VideoProvider, VideoRequest, parse_size
from providers.downloads import stream_to_file
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
from providers.lazy_http import LazyHttp
from providers.media import concat_videos, crop_to_size, decode_image, last_frame
from providers.polling import PollPolicy, retrying
from providers.pricing import KLING_PRICES
from providers.sidecars import read_sidecar, write_sidecar

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api-singapore.klingai.com"
DEFAULT_MODEL = "kling-v2-5-turbo"
MAX_PROMPT_CHARS = 2500
#: Kling's limit on an inline (base64) image.
MAX_IMAGE_BYTES = 10 * 1024 * 1024
TOKEN_SECONDS = 30 * 60
#: A token is renewed this long before it runs out (a request may take a while to arrive).
TOKEN_MARGIN = 5 * 60
QUEUED_NOTE = "queued at Kling"
KINDS = ("text2video", "image2video", "video-extend")
#: Words in a failed task's message that mean Kling's content review stopped it.
_POLICY_WORDS = re.compile(r"risk|moderation|sensitive|safety|content|policy|violat", re.IGNORECASE)

#: Aspect ratios text-to-video takes; image-to-video follows the image (cropped to the size).
RATIOS = {"16:9": (16, 9), "9:16": (9, 16), "1:1": (1, 1)}
#: The short side of the output by mode.
SHORT_SIDE = {"std": 720, "pro": 1080}


@dataclass(frozen=True)
class ModelSpec:
    modes: tuple[str, ...] = ("std", "pro")
    durations: tuple[int, ...] = (5, 10)
    #: Modes in which the model takes an end frame (`image_tail`).
    tail_modes: tuple[str, ...] = ("pro",)
    #: Kling's own video extension (`/v1/videos/video-extend`) continues this model's videos.
    extend: bool = False
    text: bool = True


MODEL_SPECS: dict[str, ModelSpec] = {
    "kling-v1": ModelSpec(tail_modes=("std", "pro"), extend=True),
    "kling-v1-5": ModelSpec(extend=True),
    "kling-v1-6": ModelSpec(extend=True),
    "kling-v2-master": ModelSpec(modes=("pro",), tail_modes=()),
    "kling-v2-1": ModelSpec(text=False),
    "kling-v2-1-master": ModelSpec(modes=("pro",), tail_modes=()),
    "kling-v2-5-turbo": ModelSpec(),
    "kling-v2-6": ModelSpec(modes=("pro",)),
}

#: USD per second of output by `model@mode`: providers.pricing.KLING_PRICES (data the settings read too).
PRICES = KLING_PRICES


class KlingToken:
    """The bearer token, made in-process and renewed before `exp`."""

    def __init__(self, access_key: str, secret_key: str, *, lifetime: int = TOKEN_SECONDS) -> None:
        self._access, self._secret, self._lifetime = access_key, secret_key, lifetime
        self._token = ""
        self._expires = 0.0

    def header(self) -> dict[str, str]:
        now = time.time()
        if not self._token or now > self._expires - min(TOKEN_MARGIN, self._lifetime / 2):
            self._token = jwt.encode(
                {"iss": self._access, "exp": int(now) + self._lifetime, "nbf": int(now) - 5},
                self._secret, algorithm="HS256", headers={"alg": "HS256", "typ": "JWT"},
            )  # fmt: skip
            self._expires = now + self._lifetime
        return {"Authorization": f"Bearer {self._token}"}

    def renew(self) -> None:
        self._token = ""


@dataclass(frozen=True)
class KlingFailure:
    """One error answer: HTTP status and Kling's body."""

    status: int
    code: int | None
    message: str
    retry_after: float | None = None


class KlingVideoProvider(VideoProvider):
    name = "kling"
    capabilities = frozenset({Capability.TEXT_TO_VIDEO, Capability.IMAGE_TO_VIDEO, Capability.EXTEND})
    default_seconds = 5
    default_size = "1280x720"
    proves_absence = True
    #: A create cut off by a crash may still be on its way: a miss counts only after this long.
    ABSENCE_GRACE_SECONDS = 15.0

    def __init__(
        self,
        *,
        access_key: str | None,
        secret_key: str | None,
        work_dir: Path,
        base_url: str = DEFAULT_BASE_URL,
        model: str = DEFAULT_MODEL,
        mode: str = "std",
        prices: dict[str, float] | None = None,
        negative_prompt: str = "",
        cfg_scale: float | None = None,
        poll_seconds: float = 5.0,
        timeout: float = 60.0,
        absence_grace: float | None = None,
        policy: PollPolicy | None = None,
    ) -> None:
        self._token = KlingToken(access_key, secret_key) if access_key and secret_key else None
        self.base_url = base_url.rstrip("/")
        self.default_model = model
        self.mode = mode
        self.prices = dict(PRICES if prices is None else prices)
        self.negative_prompt = negative_prompt
        self.cfg_scale = cfg_scale
        self.work_dir = work_dir
        self._poll_seconds = poll_seconds
        if absence_grace is not None:
            self.ABSENCE_GRACE_SECONDS = absence_grace
        self.policy = policy or PollPolicy()
        self._web = LazyHttp(timeout)
        #: Video URL and Kling video id of finished tasks (this process).
        self._outputs: dict[str, tuple[str, str | None]] = {}
        self.default_size = f"{round(SHORT_SIDE[mode] * 16 / 9)}x{SHORT_SIDE[mode]}"

    # --- plumbing ------------------------------------------------------------------------

    @property
    def http(self) -> httpx.AsyncClient:
        return self._web.client

    async def aclose(self) -> None:
        await self._web.aclose()

    def _auth(self) -> dict[str, str]:
        if self._token is None:
            raise NotConfigured("Kling is not configured.", provider=self.name, detail="KLING_ACCESS_KEY or KLING_SECRET_KEY is not set")
        return self._token.header()

    # --- checks and prices ---------------------------------------------------------------

    def model_for(self, request: VideoRequest) -> str:
        return request.model or self.default_model

    def _spec(self, model: str) -> ModelSpec:
        spec = MODEL_SPECS.get(model)
        if spec is None:
            known = ", ".join(MODEL_SPECS)
            raise InvalidRequest(f"Kling has no model '{model}' that videobot knows. Known models: {known}.")
        return spec

    def validate(self, request: VideoRequest) -> None:
        model = self.model_for(request)
        spec = self._spec(model)
        if self.mode not in spec.modes:
            raise InvalidRequest(f"Kling's {model} runs in {' or '.join(spec.modes)} mode; set KLING_MODE.")
        if len(request.prompt) > MAX_PROMPT_CHARS:
            raise InvalidRequest(f"Kling takes prompts of up to {MAX_PROMPT_CHARS} characters.")
        if request.operation is Operation.REMIX:
            raise InvalidRequest("Kling cannot remix a video; make a new one, or extend this one.")
        if request.operation is Operation.EXTEND:
            if request.source_video is None:
                raise InvalidRequest("Extend needs the source video, which is missing.")
            if self._native_extend(request) and request.seconds != 5:
                raise InvalidRequest("Kling extends a video by 5 seconds at a time.")
        if request.seconds not in spec.durations:
            raise InvalidRequest(f"Kling makes clips of {' or '.join(str(d) for d in spec.durations)} seconds.")
        end_image = getattr(request, "end_image", None)
        if end_image is not None:
            if self.mode not in spec.tail_modes:
                raise InvalidRequest(f"Kling's {model} takes an end frame only in {' or '.join(spec.tail_modes) or 'no'} mode.")
            if request.seconds != 5:
                raise InvalidRequest("Kling makes clips with an end frame of 5 seconds only.")
        text_only = request.operation is Operation.GENERATE and request.input_image is None and end_image is None
        if text_only and not spec.text:
            raise InvalidRequest(f"Kling's {model} animates an image: attach one, or set KLING_MODEL to a text-to-video model.")
        self.ratio_for(request.size)

    def ratio_for(self, size: str) -> str:
        """The aspect ratio of a size this mode makes, or why it cannot be made."""
        width, height = parse_size(size)
        short = SHORT_SIDE[self.mode]
        for ratio, (w, h) in RATIOS.items():
            expected = (round(short * w / h), short) if w >= h else (short, round(short * h / w))
            if (width, height) == expected:
                return ratio
        sizes = ", ".join(
            f"{round(short * w / h)}x{short}" if w >= h else f"{short}x{round(short * h / w)}" for w, h in RATIOS.values()
        )
        raise InvalidRequest(f"Kling in {self.mode} mode makes videos of size {sizes}.")

    def price_per_second(self, model: str) -> float:
        """The table's price, or for a model it does not list the dearest one (a budget is never undershot)."""
        rate = self.prices.get(f"{model}@{self.mode}", self.prices.get(model))
        return rate if rate is not None else max(self.prices.values(), default=0.0)

    def estimate_cost(self, request: VideoRequest) -> float | None:
        return round(self.price_per_second(self.model_for(request)) * request.seconds, 4)

    # --- create ----------------------------------------------------------------------------

    def _native_extend(self, request: VideoRequest) -> bool:
        spec = MODEL_SPECS.get(self.model_for(request))
        return bool(spec and spec.extend and _parse_id(request.source_remote_id or "") is not None)

    def kind_for(self, request: VideoRequest) -> str:
        if request.operation is Operation.EXTEND:
            return "video-extend" if self._native_extend(request) else "image2video"
        if request.input_image is not None or getattr(request, "end_image", None) is not None:
            return "image2video"
        return "text2video"

    async def body_for(self, request: VideoRequest) -> tuple[str, dict[str, Any]]:
        """The endpoint kind and JSON body of one create."""
        kind = self.kind_for(request)
        body: dict[str, Any] = {"prompt": request.prompt, "external_task_id": request.client_ref}
        if self.negative_prompt:
            body["negative_prompt"] = self.negative_prompt
        if self.cfg_scale is not None:
            body["cfg_scale"] = self.cfg_scale
        if kind == "video-extend":
            body["video_id"] = await self._source_video_id(request.source_remote_id or "")
            return kind, _without_empty(body)
        body.update(model_name=self.model_for(request), mode=self.mode, duration=str(request.seconds))
        ratio = self.ratio_for(request.size)
        if kind == "text2video":
            body["aspect_ratio"] = ratio
            return kind, _without_empty(body)
        width, height = parse_size(request.size)
        first = await self._first_frame(request)
        if first is not None:
            body["image"] = await asyncio.to_thread(_jpeg_base64, first, width, height)
        end_image: Path | None = getattr(request, "end_image", None)
        if end_image is not None:
            tail = decode_image(await asyncio.to_thread(end_image.read_bytes), name=end_image.name)
            body["image_tail"] = await asyncio.to_thread(_jpeg_base64, tail, width, height)
        return kind, _without_empty(body)

    async def _first_frame(self, request: VideoRequest) -> Image.Image | None:
        if request.operation is Operation.EXTEND:
            assert request.source_video is not None
            return await asyncio.to_thread(last_frame, request.source_video)
        if request.input_image is None:
            return None
        if not request.input_image.exists():
            raise InvalidRequest(f"The input image '{request.input_image.name}' is missing.")
        data = await asyncio.to_thread(request.input_image.read_bytes)
        return decode_image(data, name=request.input_image.name)

    async def _source_video_id(self, source_remote_id: str) -> str:
        """Kling extends a video by its own video id, which the source task's result names."""
        cached = self._outputs.get(source_remote_id)
        if cached is None or cached[1] is None:
            job = await self.poll(source_remote_id)
            if job.status is not RemoteStatus.COMPLETED:
                raise InvalidRequest("The video to extend is not finished at Kling.")
            cached = self._outputs[source_remote_id]
        if not cached[1]:
            raise ContentExpired("Kling no longer names the source video; extend it from its last frame instead.", provider=self.name)
        return cached[1]

    async def submit(self, request: VideoRequest) -> RemoteJob:
        if not request.client_ref:
            raise InvalidRequest("A Kling create needs our job id (external_task_id).")
        kind, body = await self.body_for(request)
        url = f"{self.base_url}/v1/videos/{kind}"
        # A refusal (429, 503, an expired token) made nothing and may be sent again; a create whose
        # answer was lost is settled by reading it back by its external_task_id, never by resending.
        try:
            data = await retrying(lambda: self._create_once(url, body), policy=self.policy, attempts=3, what="kling create")
        except _Ambiguous as exc:
            found = await self._by_external_id(request.client_ref, first=kind)
            if found is None:
                raise exc.error from None
            log.info("kling: a create whose answer was lost is task %s", found.id)
            data = {"task_id": found.id.partition(":")[2]}
        except ProviderInvalidRequest as exc:
            # Kling already has a task with this job's id (an earlier create arrived after all):
            # that task is this job's, adopted rather than made again.
            found = await self._by_external_id(request.client_ref, first=kind) if "external_task_id" in (exc.detail or "") else None
            if found is None:
                raise
            log.info("kling: job %s already has task %s", request.client_ref, found.id)
            data = {"task_id": found.id.partition(":")[2]}
        task_id = str(data.get("task_id") or "")
        if not task_id:
            raise _ambiguous(self.name, f"create answered without a task_id: {str(data)[:300]}")
        remote_id = f"{kind}:{task_id}"
        if kind == "image2video" and request.operation is Operation.EXTEND and request.source_video is not None:
            # The download joins the new clip to the source; remember it across restarts.
            self._write_sidecar(remote_id, {"extend_source": str(request.source_video)})
        return RemoteJob(id=remote_id, status=RemoteStatus.QUEUED, model=body.get("model_name") or self.model_for(request),
                         note=QUEUED_NOTE, poll_after=self._poll_seconds)  # fmt: skip

    async def _create_once(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await self.http.post(url, json=body, headers=self._auth())
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise TransientError("Kling is not reachable.", provider=self.name, detail=repr(exc)) from exc
        except httpx.HTTPError as exc:
            raise _Ambiguous(_ambiguous(self.name, f"create: {exc!r}")) from exc
        failure = _failure(response)
        if failure is None:
            return _data(response)
        if failure.status in (500, 502, 504) or failure.code in (5000, 5002):
            raise _Ambiguous(_ambiguous(self.name, f"create {failure.status} {failure.code}: {failure.message}"))
        raise self._error(failure, "create")

    # --- reads -----------------------------------------------------------------------------

    async def poll(self, remote_id: str) -> RemoteJob:
        parsed = _parse_id(remote_id)
        if parsed is None:
            raise GenerationFailed("This is not a Kling task id.", remote_code="bad_id", provider=self.name)
        kind, task_id = parsed
        data = await self._get(f"/v1/videos/{kind}/{task_id}", what="task")
        if data is None:
            raise GenerationFailed("Kling no longer knows this task.", remote_code="not_found", provider=self.name)
        return self._translate(kind, data)

    def _translate(self, kind: str, task: dict[str, Any]) -> RemoteJob:
        remote_id = f"{kind}:{task.get('task_id')}"
        status = str(task.get("task_status", ""))
        if status == "submitted":
            return RemoteJob(id=remote_id, status=RemoteStatus.QUEUED, note=QUEUED_NOTE, poll_after=self._poll_seconds)
        if status == "processing":
            return RemoteJob(id=remote_id, status=RemoteStatus.IN_PROGRESS, progress=50, poll_after=self._poll_seconds)
        if status == "succeed":
            videos = (task.get("task_result") or {}).get("videos") or []
            if not videos or not videos[0].get("url"):
                return RemoteJob(id=remote_id, status=RemoteStatus.FAILED, error_code="no_video", error_message="Kling's task has no video.")
            self._outputs[remote_id] = (str(videos[0]["url"]), str(videos[0].get("id") or "") or None)
            return RemoteJob(id=remote_id, status=RemoteStatus.COMPLETED, progress=100)
        if status == "failed":
            message = str(task.get("task_status_msg") or "Kling could not generate this video.")
            return RemoteJob(id=remote_id, status=RemoteStatus.FAILED, error_code="task_failed", error_message=message)
        raise TransientError("Kling answered with an unknown task status.", provider=self.name, detail=f"status {status!r}")

    def error_for(self, job: RemoteJob) -> Exception:
        message = job.error_message or "Kling could not generate this video."
        if _POLICY_WORDS.search(message):
            # Kling's review stopped it: the same prompt would be stopped again.
            return ContentPolicyRejected(message, provider=self.name, detail=job.error_code)
        return GenerationFailed(message, remote_code=job.error_code, provider=self.name)

    async def _get(self, path: str, *, what: str, params: dict[str, str] | None = None) -> dict[str, Any] | None:
        """One read, retried on transient errors; None when Kling says there is no such task."""

        async def once() -> dict[str, Any] | None:
            try:
                response = await self.http.get(self.base_url + path, params=params, headers=self._auth())
            except httpx.HTTPError as exc:
                raise TransientError("Kling did not answer.", provider=self.name, detail=f"{what}: {exc!r}") from exc
            failure = _failure(response)
            if failure is None:
                data = _data(response)
                return data or None
            if failure.status == 404 or failure.code == 1203:
                return None
            if failure.status >= 500 or failure.code in (5000, 5001, 5002):
                raise TransientError("Kling is having trouble.", provider=self.name, detail=f"{what} {failure.status}: {failure.message}")
            raise self._error(failure, what)

        return await retrying(once, policy=self.policy, what=f"kling {what}")

    async def find_remote(
        self,
        client_ref: str,
        *,
        request: VideoRequest | None = None,
        sent_at: float | None = None,
        exclude: frozenset[str] = frozenset(),
    ) -> RemoteJob | None:
        """The task our create made, read back by its external_task_id (our job id). A miss is
        proof that nothing was made once a create cut off by the crash would have arrived."""
        first = self.kind_for(request) if request is not None else "text2video"
        started = time.time()
        found = await self._by_external_id(client_ref, first=first)
        # A miss proves absence only for a look that began after the grace (each kind is a
        # separate read: one begun earlier may have missed a create that arrived meanwhile).
        wait = (sent_at or 0) + self.ABSENCE_GRACE_SECONDS - started
        if found is None and wait > 0:
            await asyncio.sleep(max(0.0, (sent_at or 0) + self.ABSENCE_GRACE_SECONDS - time.time()))
            found = await self._by_external_id(client_ref, first=first)
        if found is not None and found.id in exclude:
            raise Unavailable("The task found for this job belongs to another job.", provider=self.name,
                              detail=f"{found.id} for {client_ref}")  # fmt: skip
        return found

    async def _by_external_id(self, external_id: str, *, first: str) -> RemoteJob | None:
        # Each kind of task is read under its own path; a chain's image step is not in the
        # request read back after a crash, so every kind is asked, the likely one first.
        for kind in (first, *(k for k in KINDS if k != first)):
            data = await self._get(f"/v1/videos/{kind}", what="lookup", params={"external_task_id": external_id})
            if isinstance(data, list):
                data = next((t for t in data if (t.get("task_info") or {}).get("external_task_id") == external_id), None)
            if data:
                return self._translate(kind, data)
        return None

    async def download(self, remote_id: str, dest: Path) -> None:
        output = self._outputs.get(remote_id)
        if output is None:
            job = await self.poll(remote_id)
            if job.status is not RemoteStatus.COMPLETED:
                raise ContentExpired("Kling no longer has this video; generate it again.", provider=self.name)
            output = self._outputs[remote_id]
        sidecar = self._read_sidecar(remote_id)
        target = dest.with_name(dest.name + ".segment.mp4") if sidecar.get("extend_source") else dest

        async def fetch() -> None:
            await stream_to_file(self.http, output[0], target, provider=self.name, label="Kling")

        await retrying(fetch, policy=self.policy, attempts=3, what="kling download")
        if sidecar.get("extend_source"):
            try:
                await asyncio.to_thread(concat_videos, Path(sidecar["extend_source"]), target, dest)
            finally:
                target.unlink(missing_ok=True)

    async def cancel(self, remote_id: str) -> None:
        """Kling's API has no cancel: the task runs to its end there. Only our own state is dropped."""
        self.forget(remote_id)

    def forget(self, remote_id: str) -> None:
        self._outputs.pop(remote_id, None)
        self._sidecar(remote_id).unlink(missing_ok=True)

    # --- errors ----------------------------------------------------------------------------

    def _error(self, failure: KlingFailure, what: str) -> Exception:
        code, status, detail = failure.code, failure.status, f"{what} {failure.status} code {failure.code}: {failure.message}"
        if code == 1004:
            # The token ran out on the way (a slow clock or a long queue): a new one is made.
            if self._token is not None:
                self._token.renew()
            return TransientError("Kling's token expired.", provider=self.name, detail=detail)
        if code in (1000, 1001, 1002, 1003, 1100, 1103, 1304) or (code is None and status in (401, 403)):
            return NotConfigured("Kling refused the access key.", provider=self.name, detail=detail)
        if code in (1101, 1102):
            return Unavailable("The Kling account has no credit left; tell an admin.", provider=self.name, detail=detail)
        if code in (1302, 1303) or (code is None and status == 429):
            return RateLimited("Kling is over its limit.", retry_after=failure.retry_after, provider=self.name, detail=detail)
        if code in (1300, 1301):
            return ContentPolicyRejected(failure.message, provider=self.name, detail=detail)
        if code == 5001 or status == 503:
            return TransientError("Kling is unavailable.", provider=self.name, detail=detail)
        if code == 1202 or (status == 404 and what == "create"):
            return ModelUnavailable("Kling does not offer this here.", provider=self.name, detail=detail)
        if status >= 500:
            return TransientError("Kling is having trouble.", provider=self.name, detail=detail)
        return ProviderInvalidRequest(f"Kling refused the request: {failure.message}.", provider=self.name, detail=detail)

    # --- state on disk ---------------------------------------------------------------------

    def _sidecar(self, remote_id: str) -> Path:
        return self.work_dir / (re.sub(r"[^\w.-]", "_", remote_id) + ".json")

    def _write_sidecar(self, remote_id: str, data: dict[str, str]) -> None:
        write_sidecar(self._sidecar(remote_id), data)

    def _read_sidecar(self, remote_id: str) -> dict[str, str]:
        return read_sidecar(self._sidecar(remote_id))


class _Ambiguous(Exception):
    """A create that may or may not have made a task."""

    def __init__(self, error: ProviderError) -> None:
        super().__init__(error.message)
        self.error = error


def _parse_id(remote_id: str) -> tuple[str, str] | None:
    kind, sep, task_id = remote_id.partition(":")
    return (kind, task_id) if sep and kind in KINDS and task_id else None


def _failure(response: httpx.Response) -> KlingFailure | None:
    """None for a success (HTTP 2xx and code 0), else what Kling said."""
    try:
        body = response.json()
    except ValueError:
        body = None
    code = body.get("code") if isinstance(body, dict) else None
    if response.status_code < 300 and code in (0, None) and isinstance(body, dict):
        return None
    message = str(body.get("message") or "") if isinstance(body, dict) else response.text[:300]
    retry_after = None
    if (value := response.headers.get("retry-after")) is not None:
        try:
            retry_after = float(value)
        except ValueError:
            retry_after = None
    return KlingFailure(response.status_code, int(code) if isinstance(code, int) else None, message or f"HTTP {response.status_code}", retry_after)


def _data(response: httpx.Response) -> Any:
    body = response.json()
    return body.get("data") if isinstance(body, dict) else None


def _without_empty(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if v not in (None, "")}


def _jpeg_base64(image: Image.Image, width: int, height: int) -> str:
    """The image cropped to the video's shape, as bare base64 (Kling refuses a data: prefix)."""
    fitted = crop_to_size(image, width, height)
    data = b""
    for quality in (92, 85, 75, 60):
        out = io.BytesIO()
        fitted.save(out, "JPEG", quality=quality, optimize=True)
        data = out.getvalue()
        if len(data) <= MAX_IMAGE_BYTES:
            break
    return base64.b64encode(data).decode("ascii")


def _ambiguous(provider: str, detail: str) -> ProviderError:
    return ProviderError(
        "Kling did not confirm the job, so it may or may not have started. It was not sent again, "
        "so you are not billed twice: re-roll to try again.",
        provider=provider,
        detail=detail,
    )


__all__ = ["KlingVideoProvider", "KlingToken", "MODEL_SPECS", "PRICES", "DEFAULT_BASE_URL", "DEFAULT_MODEL"]
