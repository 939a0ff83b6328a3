"""fal's queue API: one key for Kling, Veo 3.1, Wan, MiniMax/Hailuo, Seedance, LTX and more.

The wire protocol (docs.fal.ai, "Queue"): `POST {FAL_QUEUE_URL}/{endpoint_id}` with
`Authorization: Key …` and the model's JSON input answers `request_id`, `status_url`,
`response_url` and `cancel_url`. `GET status_url?logs=1` says `IN_QUEUE` (with
`queue_position`, 0 = next), `IN_PROGRESS` (with the model's logs) or `COMPLETED`;
`GET response_url` is then the model's result (or its error: a 422 with typed `detail`
entries, or `{detail, error_type}`), whose `video.url` is streamed to disk; `PUT cancel_url`
removes a queued request or asks a running one to stop.

This is a small httpx client, not the official `fal-client`: fal-client 1.0.3 builds every
queue URL as `https://{FAL_QUEUE_RUN_HOST}/…` (a host read from the environment when it is
imported, the scheme fixed to https), so it cannot be pointed at a configured base such as a
plain-HTTP gateway or a loopback emulator; and it repeats a submit on timeouts, dropped
connections and 429 (up to 10 times), which for a paid create could bill twice.

What each model takes is data, not code: `providers/fal_endpoints.json` has one row per
endpoint family (its parameter names, allowed values, durations and the image parameter),
read by `providers.fal_endpoints`; an endpoint no row matches is refused before anything is sent.

After a crash between sending a create and storing its id there is nothing to look the
request up by: fal assigns the request id, the queue API has no client reference or
idempotency key, and `x-fal-request-id` is a response header. `find_remote` stays None and
`proves_absence` False, so the runner fails such a job with a note instead of paying twice.
"""
from __future__ import annotations

import asyncio
import base64
import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from PIL import Image

from providers.downloads import stream_to_file
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
)
from providers.fal_endpoints import TABLE_PATH, EndpointTable, Family, default_seconds, default_size, load_table, span
from providers.lazy_http import LazyHttp
from providers.media import crop_to_size, decode_image
from providers.polling import PollPolicy, retrying
from providers.sidecars import read_sidecar, write_sidecar

log = logging.getLogger(__name__)

DEFAULT_QUEUE_URL = "https://queue.fal.run"
DEFAULT_VIDEO_MODEL = "fal-ai/kling-video/v2.5-turbo/pro/text-to-video"
DEFAULT_I2V_MODEL = "fal-ai/kling-video/v2.5-turbo/pro/image-to-video"
#: Data URIs above this are refused by some fal apps; a JPEG at video-frame size is far smaller.
MAX_DATA_URI_BYTES = 8 * 1024 * 1024
#: fal's own prefixes of an endpoint id that are not the app's owner (see fal-client's AppId).
_APP_NAMESPACES = ("workflows", "comfy")
_ENDPOINT_RE = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)+$")
_PERCENT_RE = re.compile(r"(\d{1,3}(?:\.\d+)?)\s*%")
_STEPS_RE = re.compile(r"\b(\d{1,5})\s*/\s*(\d{1,5})\b")
_POLICY_TYPES = {"content_policy_violation", "content_moderated", "nsfw_content_detected"}


# --- the provider -----------------------------------------------------------------------------


@dataclass
class _Failure:
    """A finished request that failed, as fal explained it."""

    status: int
    code: str | None
    message: str
    field: str | None = None

    def error(self, provider: str) -> Exception:
        if (self.code or "") in _POLICY_TYPES:
            return ContentPolicyRejected(self.message, provider=provider, detail=f"{self.status} {self.code} {self.field or ''}")
        if self.status in (400, 422):
            where = f" ({self.field})" if self.field else ""
            return ProviderInvalidRequest(
                f"fal refused the request{where}: {self.message}", provider=provider, detail=f"422 {self.code}"
            )
        error = GenerationFailed(self.message or "fal could not generate this video.", remote_code=self.code, provider=provider)
        # fal bills no request that ended in a server error: one new attempt cannot pay twice.
        error.retryable = self.status >= 500
        return error


class FalVideoProvider(VideoProvider):
    name = "fal"
    capabilities = frozenset({Capability.TEXT_TO_VIDEO, Capability.IMAGE_TO_VIDEO})

    def __init__(
        self,
        *,
        key: str | None,
        work_dir: Path,
        queue_url: str = DEFAULT_QUEUE_URL,
        video_model: str = DEFAULT_VIDEO_MODEL,
        i2v_model: str = DEFAULT_I2V_MODEL,
        prices: dict[str, float] | None = None,
        table: EndpointTable | None = None,
        negative_prompt: str = "",
        default_mode: str = "text",
        poll_seconds: float = 2.0,
        timeout: float = 60.0,
        policy: PollPolicy | None = None,
    ) -> None:
        self._key = key
        self.queue_url = queue_url.rstrip("/")
        self.video_model = video_model
        self.i2v_model = i2v_model
        self.table = table or load_table()
        #: The table's prices, then the operator's (FAL_PRICES) over them.
        self.prices = {**self.table.prices, **(prices or {})}
        self.negative_prompt = negative_prompt
        self.work_dir = work_dir
        self._poll_seconds = poll_seconds
        self.policy = policy or PollPolicy()
        self._web = LazyHttp(timeout)
        #: Video URLs of completed requests, and explained failures, by remote id (this process).
        self._outputs: dict[str, str] = {}
        self._failures: dict[str, _Failure] = {}
        self._progress: dict[str, int] = {}
        # The pipeline's own defaults come from the endpoint it mostly runs.
        self.default_model = video_model if default_mode == "text" else i2v_model
        family = self.table.family(self.default_model)
        self.default_seconds = default_seconds(family)
        self.default_size = default_size(family)

    # --- plumbing ------------------------------------------------------------------------

    @property
    def http(self) -> httpx.AsyncClient:
        return self._web.client

    async def aclose(self) -> None:
        await self._web.aclose()

    def _auth(self) -> dict[str, str]:
        if not self._key:
            raise NotConfigured("fal is not configured.", provider=self.name, detail="FAL_KEY is not set")
        return {"Authorization": f"Key {self._key}"}

    # --- checks and prices ---------------------------------------------------------------

    def model_for(self, request: VideoRequest) -> str:
        if request.model:
            return request.model
        return self.i2v_model if request.input_image is not None else self.video_model

    def _family(self, endpoint: str) -> Family:
        if not _ENDPOINT_RE.match(endpoint) or ".." in endpoint:
            raise InvalidRequest(f"'{endpoint}' is not a fal endpoint id (like {DEFAULT_VIDEO_MODEL}).")
        family = self.table.family(endpoint)
        if family is None:
            raise self.table.refusal(endpoint)
        return family

    def validate(self, request: VideoRequest) -> None:
        if request.operation is not Operation.GENERATE:
            raise InvalidRequest(f"fal cannot {request.operation.value} a video; make a new one instead.")
        endpoint = self.model_for(request)
        family = self._family(endpoint)
        if request.input_image is not None and family.image is None:
            raise InvalidRequest(
                f"fal's {endpoint} makes video from text alone; to animate an image use an image-to-video "
                f"endpoint such as {self.i2v_model}."
            )
        if request.input_image is None and family.image is not None:
            raise InvalidRequest(f"fal's {endpoint} animates an image: attach one, or use {self.video_model} for text alone.")
        if len(request.prompt) > family.prompt_max:
            raise InvalidRequest(f"fal's {endpoint} takes prompts of up to {family.prompt_max} characters.")
        if request.seconds not in family.duration.choices:
            raise InvalidRequest(f"fal's {endpoint} makes clips of {span(family.duration.choices)} seconds.")
        family.size_arguments(endpoint, *parse_size(request.size))

    def estimate_cost(self, request: VideoRequest) -> float | None:
        endpoint = self.model_for(request)
        family = self.table.family(endpoint)
        if family is None:
            return None
        rate = self.price_per_second(endpoint, resolution=family.resolution_for(*parse_size(request.size)),
                                     audio=bool(request.audio and family.audio))  # fmt: skip
        return None if rate is None else round(rate * request.seconds, 4)

    def price_per_second(self, endpoint: str, *, resolution: str | None = None, audio: bool = False) -> float | None:
        """The most specific price: `ID@RES+audio`, `ID+audio`, `ID@RES`, then `ID`."""
        keys = []
        if audio:
            keys += [f"{endpoint}@{resolution}+audio"] if resolution else []
            keys.append(f"{endpoint}+audio")
        keys += [f"{endpoint}@{resolution}"] if resolution else []
        keys.append(endpoint)
        return next((self.prices[k] for k in keys if k in self.prices), None)

    # --- create ----------------------------------------------------------------------------

    async def arguments(self, request: VideoRequest) -> dict[str, Any]:
        """The JSON input one request becomes, by its family's row."""
        endpoint = self.model_for(request)
        family = self._family(endpoint)
        args: dict[str, Any] = dict(family.fixed)
        args[family.prompt_param] = request.prompt
        args.update(family.duration.arguments(request.seconds))
        args.update(family.size_arguments(endpoint, *parse_size(request.size)))
        negative = getattr(request, "negative_prompt", None) or self.negative_prompt
        if family.negative_prompt and negative:
            args[family.negative_prompt] = negative
        if family.seed and request.seed is not None:
            args[family.seed] = request.seed % 2_147_483_648
        if family.audio:
            args[family.audio] = bool(request.audio)
        if family.image:
            assert request.input_image is not None
            if not request.input_image.exists():
                raise InvalidRequest(f"The input image '{request.input_image.name}' is missing.")
            data = await asyncio.to_thread(request.input_image.read_bytes)
            width, height = parse_size(request.size)
            args[family.image] = await asyncio.to_thread(_jpeg_data_uri, data, request.input_image.name, width, height)
        return args

    async def submit(self, request: VideoRequest) -> RemoteJob:
        endpoint = self.model_for(request)
        args = await self.arguments(request)
        headers = self._auth()
        url = f"{self.queue_url}/{endpoint}"
        # 503 refuses before anything is queued: repeated with backoff. A 429 goes back to the
        # runner, which waits it out. Anything ambiguous may have queued (and billed) a request.
        body = await retrying(lambda: self._submit_once(url, args, headers), policy=self.policy, attempts=3, what="fal submit", provider=self.name)
        request_id = body.get("request_id")
        if not isinstance(request_id, str) or not request_id:
            raise _ambiguous(self.name, f"submit answered without a request_id: {str(body)[:300]}")
        remote_id = f"{endpoint}#{request_id}"
        urls = {k: body[k] for k in ("status_url", "response_url", "cancel_url") if isinstance(body.get(k), str)}
        self._write_sidecar(remote_id, {"endpoint": endpoint, "request_id": request_id, **urls})
        return RemoteJob(id=remote_id, status=RemoteStatus.QUEUED, model=endpoint,
                         note=_queue_note(body.get("queue_position")), poll_after=self._poll_seconds)  # fmt: skip

    async def _submit_once(self, url: str, args: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        try:
            response = await self.http.post(url, json=args, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise TransientError("fal is not reachable.", provider=self.name, detail=repr(exc)) from exc
        except httpx.HTTPError as exc:
            raise _ambiguous(self.name, f"submit: {exc!r}") from exc
        status = response.status_code
        if status < 300:
            try:
                body = response.json()
            except ValueError:
                raise _ambiguous(self.name, f"submit {status}: not JSON: {response.text[:300]}") from None
            return body if isinstance(body, dict) else {}
        if status == 429:
            raise RateLimited("fal is over its limit.", retry_after=_retry_after(response), provider=self.name, detail=_text(response))
        if status == 503:
            raise TransientError("fal is unavailable.", provider=self.name, detail=f"submit 503: {_text(response)}")
        if status >= 500:
            raise _ambiguous(self.name, f"submit {status}: {_text(response)}")
        if status == 404:
            raise ModelUnavailable(f"fal does not serve the endpoint '{url.rsplit('/', 1)[-1]}'.", provider=self.name,
                                   detail=f"submit 404 {url}: {_text(response)}")  # fmt: skip
        raise self._client_error(response, "submit")

    # --- reads -----------------------------------------------------------------------------

    async def poll(self, remote_id: str) -> RemoteJob:
        urls = self._urls(remote_id)
        response = await self._get(urls["status_url"], params={"logs": "1"}, what="status", remote_id=remote_id)
        try:
            body = response.json()
        except ValueError:
            raise TransientError("fal answered oddly.", provider=self.name, detail=f"status: {response.text[:200]}") from None
        status = str(body.get("status", "")).upper()
        endpoint = urls["endpoint"]
        if status == "IN_QUEUE":
            return RemoteJob(id=remote_id, status=RemoteStatus.QUEUED, model=endpoint,
                             note=_queue_note(body.get("queue_position")), poll_after=self._poll_seconds)  # fmt: skip
        if status == "IN_PROGRESS":
            seen = _log_progress(body.get("logs"))
            progress = max(self._progress.get(remote_id, 1), min(seen or 1, 99))
            self._progress[remote_id] = progress
            return RemoteJob(id=remote_id, status=RemoteStatus.IN_PROGRESS, progress=progress, model=endpoint,
                             poll_after=self._poll_seconds)  # fmt: skip
        if status in ("CANCELED", "CANCELLED"):
            self.forget(remote_id)
            return RemoteJob(id=remote_id, status=RemoteStatus.CANCELLED, model=endpoint)
        if status in ("FAILED", "ERROR"):
            return self._failed(remote_id, _Failure(500, body.get("error_type"), str(body.get("error") or "fal could not generate this video.")))
        if status != "COMPLETED":
            raise TransientError("fal answered with an unknown status.", provider=self.name, detail=f"status {status!r}")
        return await self._completed(remote_id, urls)

    async def _completed(self, remote_id: str, urls: dict[str, str]) -> RemoteJob:
        """COMPLETED only says the request ended; its result says whether it made a video."""
        response = await self._get(urls["response_url"], what="result", remote_id=remote_id, allow_failure=True)
        endpoint = urls["endpoint"]
        if response.status_code >= 400:
            failure = _failure(response)
            if "cancel" in (failure.code or "").lower() or "cancel" in failure.message.lower():
                self.forget(remote_id)
                return RemoteJob(id=remote_id, status=RemoteStatus.CANCELLED, model=endpoint)
            return self._failed(remote_id, failure)
        try:
            result = response.json()
        except ValueError:
            return self._failed(remote_id, _Failure(200, "bad_result", "fal's result is not JSON."))
        family = self.table.family(endpoint)
        url = _dig(result, family.output if family else "video.url") or _dig(result, "video.url") or _dig(result, "videos.0.url")
        if not isinstance(url, str) or not url:
            return self._failed(remote_id, _Failure(200, "no_video", "fal's result has no video."))
        self._outputs[remote_id] = url
        return RemoteJob(id=remote_id, status=RemoteStatus.COMPLETED, progress=100, model=endpoint)

    def _failed(self, remote_id: str, failure: _Failure) -> RemoteJob:
        self._failures[remote_id] = failure
        return RemoteJob(id=remote_id, status=RemoteStatus.FAILED, error_code=failure.code, error_message=failure.message)

    def error_for(self, job: RemoteJob) -> Exception:
        failure = self._failures.get(job.id) or _Failure(500 if job.error_code else 200, job.error_code, job.error_message or "")
        self.forget(job.id)  # the request is over; a retry is a new request
        return failure.error(self.name)

    async def _get(
        self, url: str, *, what: str, remote_id: str, params: dict[str, str] | None = None, allow_failure: bool = False
    ) -> httpx.Response:
        try:
            response = await self.http.get(url, params=params, headers=self._auth())
        except httpx.HTTPError as exc:
            raise TransientError("fal did not answer.", provider=self.name, detail=f"{what}: {exc!r}") from exc
        status = response.status_code
        if status < 300:
            return response
        if status == 429:
            raise RateLimited("fal is busy.", retry_after=_retry_after(response), provider=self.name, detail=_text(response))
        if status in (401, 403):
            raise NotConfigured("fal refused the key.", provider=self.name, detail=f"{what} {status}: {_text(response)}")
        if what == "status" and status == 404:
            raise GenerationFailed("fal no longer knows this request.", remote_code="not_found", provider=self.name)
        if allow_failure and (status < 500 or response.headers.get("x-fal-error-type") or _has_detail(response)):
            return response  # the request's own outcome: a model or request error
        if status >= 500:
            raise TransientError("fal is having trouble.", provider=self.name, detail=f"{what} {status}: {_text(response)}")
        raise self._client_error(response, what)

    async def download(self, remote_id: str, dest: Path) -> None:
        url = self._outputs.get(remote_id)
        if url is None:
            # After a restart: the result still names the file.
            job = await self._completed(remote_id, self._urls(remote_id))
            if job.status is not RemoteStatus.COMPLETED:
                raise ContentExpired("fal no longer has this video; generate it again.", provider=self.name)
            url = self._outputs[remote_id]
        # The key goes only to the queue's own host, never to a file host it did not come from.
        headers = self._auth() if _origin(url) == _origin(self.queue_url) else {}
        await stream_to_file(self.http, url, dest, provider=self.name, label="fal", headers=headers)

    async def cancel(self, remote_id: str) -> None:
        urls = self._urls(remote_id)
        try:
            response = await self.http.put(urls["cancel_url"], headers=self._auth())
        except httpx.HTTPError as exc:
            raise TransientError("fal did not answer the cancel.", provider=self.name, detail=repr(exc)) from exc
        status = response.status_code
        # 400 ALREADY_COMPLETED and 404 NOT_FOUND: nothing left to stop.
        if status >= 300 and status not in (400, 404):
            if status == 429:
                raise RateLimited("fal is busy.", retry_after=_retry_after(response), provider=self.name)
            if status in (401, 403):
                raise NotConfigured("fal refused the key.", provider=self.name, detail=f"cancel {status}")
            raise TransientError("fal did not take the cancel.", provider=self.name, detail=f"cancel {status}: {_text(response)}")
        self.forget(remote_id)

    def forget(self, remote_id: str) -> None:
        self._outputs.pop(remote_id, None)
        self._failures.pop(remote_id, None)
        self._progress.pop(remote_id, None)
        self._sidecar(remote_id).unlink(missing_ok=True)

    # --- errors ----------------------------------------------------------------------------

    def _client_error(self, response: httpx.Response, what: str) -> Exception:
        status = response.status_code
        if status in (401, 403):
            return NotConfigured("fal refused the key.", provider=self.name, detail=f"{what} {status}: {_text(response)}")
        return _failure(response).error(self.name)

    # --- where a request lives ---------------------------------------------------------------

    def _urls(self, remote_id: str) -> dict[str, str]:
        """The URLs submit returned (kept beside the job), else the documented ones on our base."""
        endpoint, sep, request_id = remote_id.rpartition("#")
        if not sep:
            raise GenerationFailed("This is not a fal request id.", remote_code="bad_id", provider=self.name)
        stored = self._read_sidecar(remote_id)
        base = f"{self.queue_url}/{_app_id(endpoint)}/requests/{request_id}"
        return {
            "endpoint": endpoint,
            "status_url": stored.get("status_url") or f"{base}/status",
            "response_url": stored.get("response_url") or base,
            "cancel_url": stored.get("cancel_url") or f"{base}/cancel",
        }

    def _sidecar(self, remote_id: str) -> Path:
        request_id = re.sub(r"[^\w.-]", "_", remote_id.rpartition("#")[2])
        return self.work_dir / f"{request_id}.json"

    def _write_sidecar(self, remote_id: str, data: dict[str, str]) -> None:
        write_sidecar(self._sidecar(remote_id), data)

    def _read_sidecar(self, remote_id: str) -> dict[str, str]:
        return read_sidecar(self._sidecar(remote_id))


# --- helpers ----------------------------------------------------------------------------------


def _app_id(endpoint: str) -> str:
    """`owner/alias` (with a namespace prefix): status and results live there, not under the subpath."""
    parts = endpoint.split("/")
    keep = 3 if parts[0] in _APP_NAMESPACES else 2
    return "/".join(parts[:keep])


def _queue_note(position: object) -> str:
    if isinstance(position, int) and position > 0:
        return f"queued at fal, {position} ahead"
    return "queued at fal, next in line"


def _log_progress(logs: object) -> int | None:
    """The latest percentage (or step N/M) a model logged; fal has no progress field of its own."""
    if not isinstance(logs, list):
        return None
    for entry in reversed(logs):
        message = entry.get("message", "") if isinstance(entry, dict) else str(entry)
        if m := _PERCENT_RE.search(message):
            return int(float(m.group(1)))
        if (m := _STEPS_RE.search(message)) and int(m.group(2)) > 0:
            return int(100 * int(m.group(1)) / int(m.group(2)))
    return None


def _dig(data: object, path: str) -> object:
    for part in path.split("."):
        if isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        elif isinstance(data, dict):
            data = data.get(part)
        else:
            return None
    return data


def _jpeg_data_uri(data: bytes, name: str, width: int, height: int) -> str:
    """The image cropped to the video's shape, as the best JPEG whose data URI fits."""
    image = crop_to_size(decode_image(data, name=name), width, height)
    encoded = ""
    for quality in (92, 85, 75, 60, 45):
        out = io.BytesIO()
        image.save(out, "JPEG", quality=quality, optimize=True)
        encoded = "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")
        if len(encoded) <= MAX_DATA_URI_BYTES:
            return encoded
    image.thumbnail((max(width // 2, 64), max(height // 2, 64)), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=75)
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def _failure(response: httpx.Response) -> _Failure:
    """fal's two error shapes: model errors (`detail` list of {loc, msg, type}) and request
    errors (`detail` text, `error_type`, also in X-Fal-Error-Type)."""
    status = response.status_code
    code = response.headers.get("x-fal-error-type")
    try:
        body = response.json()
    except ValueError:
        return _Failure(status, code, response.text[:300] or f"HTTP {status}")
    detail = body.get("detail") if isinstance(body, dict) else body
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        first = detail[0]
        loc = [str(p) for p in first.get("loc", []) if str(p) != "body"]
        return _Failure(status, str(first.get("type") or code or "invalid"), str(first.get("msg") or "invalid input"),
                        field=".".join(loc) or None)  # fmt: skip
    message = detail if isinstance(detail, str) else (body.get("error") if isinstance(body, dict) else None)
    if isinstance(body, dict):
        code = code or body.get("error_type")
    return _Failure(status, code, str(message or f"HTTP {status}"))


def _has_detail(response: httpx.Response) -> bool:
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and "detail" in body


def _text(response: httpx.Response) -> str:
    try:
        return response.text[:500]
    except Exception:  # a streamed body may be unreadable; the status is enough
        return ""


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def _ambiguous(provider: str, detail: str) -> ProviderError:
    return ProviderError(
        "fal did not confirm the job, so it may or may not have started. It was not sent again, "
        "so you are not billed twice: re-roll to try again.",
        provider=provider,
        detail=detail,
    )


__all__ = ["FalVideoProvider", "EndpointTable", "Family", "load_table", "TABLE_PATH", "DEFAULT_QUEUE_URL"]
