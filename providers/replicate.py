"""Replicate's predictions API through the official `replicate` client (1.0.x).

The client takes `base_url=` (and reads `REPLICATE_BASE_URL`), so it runs against any base that
speaks the protocol, a loopback emulator included. It never repeats a POST (its retry transport
retries GET/PUT/DELETE on 429/503/504 only), so a create is sent once unless Replicate refused it.

What is special about Replicate, and only that:

- Any model runs by `owner/name` (`POST /v1/models/{owner}/{name}/predictions`) or pinned as
  `owner/name:version` (`POST /v1/predictions` with `version`). How our request becomes a model's
  input is data (`providers/replicate_models.json`, read by `providers.replicate_models`), and
  the model's own OpenAPI schema (`GET /v1/models/{owner}/{name}`) checks that input before the
  create is sent. A model the catalogue has no row (and price) for is refused until one is added.
- A prediction is `starting`, `processing`, `succeeded`, `failed` or `canceled`; `output` is a URL
  (or a list of them). API outputs are deleted after one hour, so the video is downloaded the
  moment the prediction is seen to succeed, and kept beside the job until the runner takes it.
- Cancel is `POST /v1/predictions/{id}/cancel`.
- There is no idempotency key. After a crash between sending a create and storing its id,
  `find_remote` lists the account's recent predictions (newest first) and matches ours by model,
  prompt, creation time and our reference: where the model takes a seed and the user gave none,
  the seed is derived from our job id, so the input itself names the job. One match is adopted;
  none, once a create cut off by the crash would have been made (the grace), proves that none was
  made (a listing shows every prediction of the account), so it is sent again; two are refused.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import logging
import os
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import replicate
from replicate.exceptions import ReplicateError
from PIL import Image

from providers.base import (
    Capability,
    ImageProvider,
    ImageRequest,
    ImageResult,
    Operation,
    RemoteJob,
    RemoteStatus,
    VideoProvider,
    VideoRequest,
    parse_size,
)
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
from providers.media import crop_to_size, decode_image
from providers.polling import PollPolicy, retrying, wait_for_completion
from providers.replicate_models import Catalogue, InputSchema, ModelRow, load_catalogue

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.replicate.com"
DEFAULT_VIDEO_MODEL = "wan-video/wan-2.5-t2v"
DEFAULT_I2V_MODEL = "wan-video/wan-2.5-i2v"
DEFAULT_IMAGE_MODEL = "black-forest-labs/flux-schnell"
QUEUED_NOTE = "starting at Replicate"
_MODEL_RE = re.compile(r"^[\w.-]+/[\w.-]+(:[0-9a-f]{8,64})?$")
_PERCENT_RE = re.compile(r"(\d{1,3})%")
_THROTTLE_RE = re.compile(r"available in (\d+(?:\.\d+)?) second")
_POLICY_RE = re.compile(r"\bE005\b|flagged as sensitive|nsfw", re.IGNORECASE)
#: Pages of the prediction list read when settling an interrupted create.
MAX_LIST_PAGES = 5


class ReplicateVideoProvider(VideoProvider):
    name = "replicate"
    capabilities = frozenset({Capability.TEXT_TO_VIDEO, Capability.IMAGE_TO_VIDEO})
    proves_absence = True
    ABSENCE_GRACE_SECONDS = 10.0

    def __init__(
        self,
        *,
        api_token: str | None,
        work_dir: Path,
        base_url: str = DEFAULT_BASE_URL,
        video_model: str = DEFAULT_VIDEO_MODEL,
        i2v_model: str = DEFAULT_I2V_MODEL,
        catalogue: Catalogue | None = None,
        prices: dict[str, float] | None = None,
        default_mode: str = "text",
        poll_seconds: float = 2.0,
        timeout: float = 60.0,
        absence_grace: float | None = None,
        policy: PollPolicy | None = None,
    ) -> None:
        self._token = api_token
        self.base_url = base_url.rstrip("/")
        self.video_model = video_model
        self.i2v_model = i2v_model
        self.catalogue = catalogue or load_catalogue()
        self.prices = dict(prices or {})
        self.work_dir = work_dir
        self._poll_seconds = poll_seconds
        self._timeout = timeout
        if absence_grace is not None:
            self.ABSENCE_GRACE_SECONDS = absence_grace
        self.policy = policy or PollPolicy()
        self._client: replicate.Client | None = None
        self._web = LazyHttp(timeout)
        self._schemas: dict[str, InputSchema | None] = {}
        self.default_model = video_model if default_mode == "text" else i2v_model
        row = self.catalogue.row(self.default_model)
        if row is not None:
            self.default_seconds = min(row.duration.choices, key=lambda s: (abs(s - 5), s))
            self.default_size = "1280x720" if "1280x720" in row.sizes else row.sizes[0]

    # --- plumbing ------------------------------------------------------------------------

    @property
    def client(self) -> replicate.Client:
        if not self._token:
            raise NotConfigured("Replicate is not configured.", provider=self.name, detail="REPLICATE_API_TOKEN is not set")
        if self._client is None:
            self._client = replicate.Client(api_token=self._token, base_url=self.base_url, timeout=httpx.Timeout(self._timeout))
        return self._client

    @property
    def http(self) -> httpx.AsyncClient:
        """For output files: signed delivery URLs that take no token."""
        return self._web.client

    async def aclose(self) -> None:
        if self._client is not None:
            # replicate.Client has no close of its own; its httpx client holds the connections.
            await self._client._async_client.aclose()
            self._client = None
        await self._web.aclose()

    # --- checks and prices ---------------------------------------------------------------

    def model_for(self, request: VideoRequest) -> str:
        if request.model:
            return request.model
        return self.i2v_model if request.input_image is not None else self.video_model

    def row_for(self, model: str) -> ModelRow:
        if not _MODEL_RE.match(model):
            raise InvalidRequest(f"'{model}' is not a Replicate model (owner/name, or owner/name:version).")
        row = self.catalogue.row(model)
        if row is None:
            raise InvalidRequest(
                f"The Replicate model '{model}' is not in the model catalogue ({self.catalogue.path}), so its inputs and "
                "price are not known. An admin can add a row for it there (or in REPLICATE_MODELS_FILE)."
            )
        return row

    def validate(self, request: VideoRequest) -> None:
        if request.operation is not Operation.GENERATE:
            raise InvalidRequest(f"Replicate cannot {request.operation.value} a video; make a new one instead.")
        model = self.model_for(request)
        row = self.row_for(model)
        if request.input_image is not None and row.image is None:
            raise InvalidRequest(f"Replicate's {model} makes video from text alone; to animate an image use {self.i2v_model}.")
        if request.input_image is None and row.image_required:
            raise InvalidRequest(f"Replicate's {model} animates an image: attach one, or use {self.video_model} for text alone.")
        row.check_seconds(request.seconds)
        row.check_size(request.size)

    def estimate_cost(self, request: VideoRequest) -> float | None:
        model = self.model_for(request)
        row = self.catalogue.row(model)
        base = model.split(":", 1)[0]
        if f"{base}@run" in self.prices:
            return self.prices[f"{base}@run"]
        if base in self.prices:
            return round(self.prices[base] * request.seconds, 4)
        if row is None:
            return None
        if row.per_run is not None:
            return row.per_run
        short = str(min(parse_size(request.size)))
        rate = row.per_second_by_resolution.get(short, row.per_second)
        return None if rate is None else round(rate * request.seconds, 4)

    # --- the model's schema ------------------------------------------------------------------

    async def input_schema(self, model: str) -> InputSchema | None:
        """The model's `Input` schema (cached); None when Replicate does not publish one."""
        if model in self._schemas:
            return self._schemas[model]
        owner_name, _, version = model.partition(":")

        async def fetch() -> dict[str, Any] | None:
            try:
                found = await self.client.models.async_get(owner_name)
                if version:
                    return (await found.versions.async_get(version)).openapi_schema
                return found.latest_version.openapi_schema if found.latest_version else None
            except ReplicateError as exc:
                if exc.status == 404:
                    raise ModelUnavailable(f"Replicate has no model '{model}'.", provider=self.name, detail=str(exc)) from exc
                raise self._read_error(exc, "model") from exc
            except httpx.HTTPError as exc:
                raise TransientError("Replicate did not answer.", provider=self.name, detail=f"model: {exc!r}") from exc

        openapi = await retrying(fetch, policy=self.policy, attempts=3, what="replicate model")
        schema = InputSchema.from_openapi(openapi) if openapi else None
        self._schemas[model] = schema
        return schema

    # --- create ----------------------------------------------------------------------------

    async def arguments(self, request: VideoRequest) -> dict[str, Any]:
        """The input one request becomes, by the model's catalogue row."""
        model = self.model_for(request)
        row = self.row_for(model)
        width, height = parse_size(request.size)
        args: dict[str, Any] = dict(row.fixed)
        if row.prompt:
            args[row.prompt] = request.prompt
        args.update(row.duration.arguments(request.seconds))
        args.update(row.size_arguments(width, height))
        if row.seed:
            args[row.seed] = request.seed % 2_147_483_648 if request.seed is not None else ref_seed(request.client_ref)
        if row.image and request.input_image is not None:
            if not request.input_image.exists():
                raise InvalidRequest(f"The input image '{request.input_image.name}' is missing.")
            data = await asyncio.to_thread(request.input_image.read_bytes)
            args[row.image] = await asyncio.to_thread(_jpeg_data_uri, data, request.input_image.name, width, height)
        return args

    async def submit(self, request: VideoRequest) -> RemoteJob:
        model = self.model_for(request)
        row = self.row_for(model)
        args = await self.arguments(request)
        await self.check_input(model, row, args)
        prediction = await self.create(model, args)
        return RemoteJob(id=prediction.id, status=RemoteStatus.QUEUED, model=model, note=QUEUED_NOTE, poll_after=self._poll_seconds)

    async def check_input(self, model: str, row: ModelRow, args: dict[str, Any]) -> None:
        """The input checked against the model's own schema, before anything is sent or billed."""
        schema = await self.input_schema(model)
        if schema is not None:
            if not any(name in schema.properties for name in (row.prompt, row.image) if name):
                raise InvalidRequest(f"Replicate's {model} takes neither a prompt nor an image, so videobot cannot drive it.")
            if problems := schema.problems(args):
                raise InvalidRequest(
                    f"Replicate's {model} would refuse this input ({'; '.join(problems)}): its row in the model catalogue "
                    f"({self.catalogue.path}) no longer matches the model. Tell an admin."
                )

    async def create(self, model: str, args: dict[str, Any]) -> Any:
        """One prediction; repeated only when Replicate refused it (503), never when its answer was lost."""
        owner_name, _, version = model.partition(":")
        client = self.client

        async def create() -> Any:
            try:
                if version:
                    return await client.predictions.async_create(version=version, input=args)
                return await client.models.predictions.async_create(model=owner_name, input=args)
            except ReplicateError as exc:
                raise self._create_error(exc) from exc
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                raise TransientError("Replicate is not reachable.", provider=self.name, detail=repr(exc)) from exc
            except httpx.HTTPError as exc:
                raise _ambiguous(self.name, f"create: {exc!r}") from exc

        return await retrying(create, policy=self.policy, attempts=3, what="replicate create")

    # --- reads -----------------------------------------------------------------------------

    async def poll(self, remote_id: str) -> RemoteJob:
        prediction = await self._get(remote_id)
        job = self._translate(prediction)
        if job.status is RemoteStatus.COMPLETED:
            # Outputs are deleted an hour after the prediction: fetch the file now, not at delivery.
            await self._keep_output(prediction)
        return job

    async def _get(self, remote_id: str) -> Any:
        try:
            return await self.client.predictions.async_get(remote_id)
        except ReplicateError as exc:
            if exc.status == 404:
                raise GenerationFailed("Replicate no longer knows this prediction.", remote_code="not_found", provider=self.name) from exc
            raise self._read_error(exc, "prediction") from exc
        except httpx.HTTPError as exc:
            raise TransientError("Replicate did not answer.", provider=self.name, detail=f"get {remote_id}: {exc!r}") from exc

    def _translate(self, prediction: Any) -> RemoteJob:
        status = prediction.status
        model = prediction.model or None
        if status == "starting":
            return RemoteJob(id=prediction.id, status=RemoteStatus.QUEUED, model=model, note=QUEUED_NOTE, poll_after=self._poll_seconds)
        if status == "processing":
            return RemoteJob(id=prediction.id, status=RemoteStatus.IN_PROGRESS, progress=_log_progress(prediction.logs),
                             model=model, poll_after=self._poll_seconds)  # fmt: skip
        if status == "succeeded":
            if not _output_url(prediction.output):
                return RemoteJob(id=prediction.id, status=RemoteStatus.FAILED, model=model, error_code="no_output",
                                 error_message="Replicate's prediction has no video.")  # fmt: skip
            return RemoteJob(id=prediction.id, status=RemoteStatus.COMPLETED, progress=100, model=model)
        if status == "failed":
            return RemoteJob(id=prediction.id, status=RemoteStatus.FAILED, model=model, error_code="failed",
                             error_message=str(prediction.error or "Replicate could not generate this video."))  # fmt: skip
        if status == "canceled":
            return RemoteJob(id=prediction.id, status=RemoteStatus.CANCELLED, model=model)
        raise TransientError("Replicate answered with an unknown status.", provider=self.name, detail=f"status {status!r}")

    def error_for(self, job: RemoteJob) -> Exception:
        message = job.error_message or "Replicate could not generate this video."
        if _POLICY_RE.search(message):
            return ContentPolicyRejected(message, provider=self.name, detail=job.error_code)
        return GenerationFailed(message, remote_code=job.error_code, provider=self.name)

    def _kept(self, remote_id: str) -> Path:
        return self.work_dir / (re.sub(r"[^\w.-]", "_", remote_id) + ".mp4")

    async def _keep_output(self, prediction: Any) -> None:
        kept = self._kept(prediction.id)
        if kept.exists():
            return
        url = _output_url(prediction.output)
        assert url is not None
        self.work_dir.mkdir(parents=True, exist_ok=True)
        partial = kept.with_name(kept.name + ".part")
        try:
            await stream_to_file(self.http, url, partial, provider=self.name, label="Replicate")
        except ContentExpired as exc:
            raise ContentExpired(
                "Replicate deleted this video (it keeps outputs for an hour); generate it again.", provider=self.name, detail=exc.detail
            ) from exc
        os.replace(partial, kept)

    async def download(self, remote_id: str, dest: Path) -> None:
        kept = self._kept(remote_id)
        if not kept.exists():
            job = await self.poll(remote_id)  # after a restart: fetched now, if Replicate still has it
            if job.status is not RemoteStatus.COMPLETED:
                raise ContentExpired("Replicate no longer has this video; generate it again.", provider=self.name)
        os.replace(kept, dest)

    async def cancel(self, remote_id: str) -> None:
        try:
            await self.client.predictions.async_cancel(remote_id)
        except ReplicateError as exc:
            if exc.status not in (404, 409, 422):  # gone, or already finished: nothing left to stop
                raise self._read_error(exc, "cancel") from exc
        except httpx.HTTPError as exc:
            raise TransientError("Replicate did not answer the cancel.", provider=self.name, detail=repr(exc)) from exc
        self._kept(remote_id).unlink(missing_ok=True)

    # --- an interrupted create -----------------------------------------------------------------

    async def find_remote(
        self,
        client_ref: str,
        *,
        request: VideoRequest | None = None,
        sent_at: float | None = None,
        exclude: frozenset[str] = frozenset(),
    ) -> RemoteJob | None:
        if request is None or sent_at is None:
            raise Unavailable("Cannot look for the prediction without the request.", provider=self.name)
        # A chain's image step is not in the request read back after a crash: either model may have run it.
        models = {m.split(":", 1)[0] for m in (request.model,) if m} or {self.video_model.split(":")[0], self.i2v_model.split(":")[0]}
        seeds = {request.seed % 2_147_483_648 if request.seed is not None else ref_seed(client_ref)}

        def matches(p: dict[str, Any]) -> bool:
            if p["id"] in exclude or p["model"] not in models or p["created_at"] < sent_at - 5:
                return False
            row = self.catalogue.row(p["model"])
            inputs = p["input"] or {}
            if row is None or inputs.get(row.prompt or "prompt") != request.prompt:
                return False
            return not row.seed or inputs.get(row.seed) in seeds

        started = time.time()
        found = [p for p in await self.recent(since=sent_at - 5) if matches(p)]
        wait = sent_at + self.ABSENCE_GRACE_SECONDS - started
        if not found and wait > 0:
            # A miss is proof only for a listing made once a create cut off by the crash would exist.
            await asyncio.sleep(max(0.0, sent_at + self.ABSENCE_GRACE_SECONDS - time.time()))
            found = [p for p in await self.recent(since=sent_at - 5) if matches(p)]
        if len(found) > 1:
            raise Unavailable("More than one prediction matches the interrupted create.", provider=self.name,
                              detail=f"candidates {[p['id'] for p in found]} for {client_ref}")  # fmt: skip
        if not found:
            return None
        return self._translate(await self._get(found[0]["id"]))

    async def recent(self, *, since: float) -> list[dict[str, Any]]:
        """The account's predictions created since `since` (epoch seconds), newest first."""
        out: list[dict[str, Any]] = []
        cursor: Any = ...
        for _ in range(MAX_LIST_PAGES):
            page = await retrying(lambda c=cursor: self._list(c), policy=self.policy, attempts=3, what="replicate list")
            for p in page.results:
                created = _epoch(p.created_at)
                if created < since:
                    return out
                out.append({"id": p.id, "model": p.model, "input": p.input, "created_at": created})
            if not page.next:
                return out
            cursor = page.next
        return out

    async def _list(self, cursor: Any) -> Any:
        try:
            return await self.client.predictions.async_list(cursor)
        except ReplicateError as exc:
            raise self._read_error(exc, "list") from exc
        except httpx.HTTPError as exc:
            raise TransientError("Replicate did not answer.", provider=self.name, detail=f"list: {exc!r}") from exc

    # --- errors ----------------------------------------------------------------------------

    def _create_error(self, exc: ReplicateError) -> Exception:
        status, detail = exc.status or 0, f"create {exc.status}: {exc.title}: {exc.detail}"
        if status == 429:
            return RateLimited("Replicate is over its limit.", retry_after=_throttle_wait(exc), provider=self.name, detail=detail)
        if status == 503:
            return TransientError("Replicate is unavailable.", provider=self.name, detail=detail)
        if status >= 500:
            return _ambiguous(self.name, detail)
        return self._client_error(exc, detail)

    def _read_error(self, exc: ReplicateError, what: str) -> Exception:
        status, detail = exc.status or 0, f"{what} {exc.status}: {exc.title}: {exc.detail}"
        if status == 429:
            return RateLimited("Replicate is busy.", retry_after=_throttle_wait(exc), provider=self.name, detail=detail)
        if status >= 500:
            return TransientError("Replicate is having trouble.", provider=self.name, detail=detail)
        return self._client_error(exc, detail)

    def _client_error(self, exc: ReplicateError, detail: str) -> Exception:
        status = exc.status or 0
        if status in (401, 403):
            return NotConfigured("Replicate refused the API token.", provider=self.name, detail=detail)
        if status == 402:
            return Unavailable("The Replicate account has no credit left; tell an admin.", provider=self.name, detail=detail)
        if status == 404:
            return ModelUnavailable("Replicate does not serve this model.", provider=self.name, detail=detail)
        if _POLICY_RE.search(str(exc.detail or "")):
            return ContentPolicyRejected(str(exc.detail), provider=self.name, detail=detail)
        return ProviderInvalidRequest(f"Replicate refused the request: {exc.detail or exc.title}.", provider=self.name, detail=detail)


class ReplicateImageProvider(ImageProvider):
    """Stills from a catalogued text-to-image model (REPLICATE_IMAGE_MODEL), alone or as a chain's
    first frame. Shares the video provider's client, schema checks and error mapping."""

    name = "replicate-image"

    def __init__(self, video: ReplicateVideoProvider, *, model: str = DEFAULT_IMAGE_MODEL, snap_size: bool = False,
                 timeout: float = 600.0) -> None:  # fmt: skip
        self.video = video
        self.default_model = model
        #: As a chain's first frame: any size is asked for the nearest shape the model makes (then cropped).
        self.snap_size = snap_size
        self.policy = PollPolicy(interval=max(video._poll_seconds, 0.01), min_interval=0.01, timeout=timeout,
                                 backoff_base=video.policy.backoff_base, backoff_max=video.policy.backoff_max)  # fmt: skip
        row = video.catalogue.image_row(model)
        self.default_size = row.sizes[0] if row is not None else "1024x1024"

    def _row(self, model: str) -> ModelRow:
        row = self.video.catalogue.image_row(model)
        if row is None:
            raise InvalidRequest(
                f"The Replicate image model '{model}' is not in the model catalogue ({self.video.catalogue.path}); "
                "an admin can add it under 'images' (or in REPLICATE_MODELS_FILE)."
            )
        return row

    def _size(self, row: ModelRow, size: str) -> str:
        """The size asked for, or when snapping the one the model makes nearest its shape."""
        if not self.snap_size:
            row.check_size(size)
            return size.lower()
        width, height = parse_size(size)
        return min(row.sizes, key=lambda s: abs(_aspect(s) - width / height))

    def validate(self, request: ImageRequest) -> None:
        self._size(self._row(request.model or self.default_model), request.size)

    def estimate_cost(self, request: ImageRequest) -> float | None:
        model = (request.model or self.default_model).split(":", 1)[0]
        if f"{model}@run" in self.video.prices:
            return self.video.prices[f"{model}@run"]
        row = self.video.catalogue.image_row(model)
        return row.per_run if row is not None else None

    async def generate(self, request: ImageRequest, dest: Path) -> ImageResult:
        model = request.model or self.default_model
        row = self._row(model)
        width, height = parse_size(self._size(row, request.size))
        args: dict[str, Any] = dict(row.fixed)
        args[row.prompt or "prompt"] = request.prompt
        args.update(row.size_arguments(width, height))
        if row.seed:
            args[row.seed] = request.seed % 2_147_483_648 if request.seed is not None else ref_seed(request.client_ref or request.prompt)
        await self.video.check_input(model, row, args)
        prediction = await self.video.create(model, args)
        waiter = _ImageWait(self.video)
        await wait_for_completion(waiter, prediction.id, policy=self.policy)  # type: ignore[arg-type]
        url = _output_url(waiter.outputs[prediction.id])
        assert url is not None
        await stream_to_file(self.video.http, url, dest, provider=self.name, label="Replicate")
        size = await asyncio.to_thread(_as_png, dest)
        return ImageResult(path=dest, width=size[0], height=size[1], model=model, remote_id=prediction.id,
                           cost=self.estimate_cost(request))  # fmt: skip

    async def aclose(self) -> None:
        await self.video.aclose()


class _ImageWait:
    """An image prediction seen as a remote job, so the one polling engine waits on it."""

    def __init__(self, video: ReplicateVideoProvider) -> None:
        self.video = video
        self.name = "replicate-image"
        self.outputs: dict[str, Any] = {}

    async def poll(self, remote_id: str) -> RemoteJob:
        prediction = await self.video._get(remote_id)
        job = self.video._translate(prediction)
        if job.status is RemoteStatus.COMPLETED:
            self.outputs[remote_id] = prediction.output
        return job

    def error_for(self, job: RemoteJob) -> Exception:
        return self.video.error_for(job)

    async def cancel(self, remote_id: str) -> None:
        await self.video.cancel(remote_id)


def _aspect(size: str) -> float:
    width, height = parse_size(size)
    return width / height


def _as_png(path: Path) -> tuple[int, int]:
    image = decode_image(path.read_bytes(), name="replicate image")
    image.save(path, "PNG")
    return image.size


def ref_seed(client_ref: str) -> int:
    """A seed derived from our job id: it puts the job's name into a prediction's input."""
    return int.from_bytes(hashlib.sha256(client_ref.encode()).digest()[:4], "big") % 2_147_483_648


def _output_url(output: Any) -> str | None:
    if isinstance(output, str):
        return output
    if isinstance(output, list) and output and isinstance(output[0], str):
        return output[0]
    if isinstance(output, dict):
        for key in ("video", "output", "mp4"):
            if isinstance(output.get(key), str):
                return output[key]
    return None


def _epoch(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _log_progress(logs: str | None) -> int:
    """The model's last logged percentage (tqdm bars); Replicate has no progress field."""
    found = _PERCENT_RE.findall(logs or "")
    return min(max(int(found[-1]), 1), 99) if found else 1


def _throttle_wait(exc: ReplicateError) -> float | None:
    """Replicate says when to come back in the 429's text ("Expected available in 2 seconds");
    the client's error keeps no headers."""
    m = _THROTTLE_RE.search(str(exc.detail or ""))
    return float(m.group(1)) if m else None


def _jpeg_data_uri(data: bytes, name: str, width: int, height: int) -> str:
    """The image cropped to the video's shape, as a JPEG data URI (Replicate takes them for file inputs)."""
    image: Image.Image = crop_to_size(decode_image(data, name=name), width, height)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def _ambiguous(provider: str, detail: str) -> ProviderError:
    return ProviderError(
        "Replicate did not confirm the job, so it may or may not have started. It was not sent again, "
        "so you are not billed twice: re-roll to try again.",
        provider=provider,
        detail=detail,
    )


__all__ = ["ReplicateVideoProvider", "ReplicateImageProvider", "ref_seed", "DEFAULT_IMAGE_MODEL", "DEFAULT_BASE_URL", "DEFAULT_VIDEO_MODEL", "DEFAULT_I2V_MODEL"]
