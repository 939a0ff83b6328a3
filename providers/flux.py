"""Black Forest Labs' Flux image API over httpx (there is no official async SDK).

Submit to `/v1/{model}`, poll the `polling_url` the API returns (it may point to a
regional host), and fetch `result.sample` at once: it is a signed URL valid for ten
minutes. Waiting uses `providers.polling.wait_for_completion` like every video job,
through a small adapter that presents the BFL task as a remote job.
"""
from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import httpx

from providers.base import ImageProvider, ImageRequest, ImageResult, RemoteJob, RemoteStatus, parse_size
from providers.errors import (
    ContentExpired,
    ContentPolicyRejected,
    GenerationFailed,
    InvalidRequest,
    NotConfigured,
    ProviderError,
    ProviderInvalidRequest,
    RateLimited,
    TransientError,
    Unavailable,
)
from providers.media import decode_image
from providers.polling import PollPolicy, retrying, wait_for_completion
from providers.pricing import FLUX_USD_PER_MEGAPIXEL, flux_cost

MODERATED = {"Request Moderated", "Content Moderated"}
MIN_SIDE, MAX_PIXELS = 64, 4_194_304


class FluxImageProvider(ImageProvider):
    name = "flux"
    default_size = "1280x720"

    def __init__(
        self,
        *,
        api_key: str | None,
        base_url: str = "https://api.bfl.ai",
        model: str = "flux-2-pro",
        prices: dict[str, float] | None = None,
        poll_seconds: float = 0.5,
        timeout_seconds: float = 300.0,
        request_timeout: float = 60.0,
        retry_backoff: float = 1.0,
    ) -> None:
        self.default_model = model
        self._api_key = api_key
        self._base_url = base_url.rstrip("/")
        self._prices = dict(prices if prices is not None else FLUX_USD_PER_MEGAPIXEL)
        self._request_timeout = request_timeout
        self.policy = PollPolicy(
            interval=poll_seconds, min_interval=min(poll_seconds, 0.2), timeout=timeout_seconds,
            backoff_base=retry_backoff, backoff_max=max(retry_backoff * 30, 0.05),
        )  # fmt: skip
        self._http: httpx.AsyncClient | None = None

    @property
    def http(self) -> httpx.AsyncClient:
        if self._api_key is None:
            raise NotConfigured("Flux is not configured.", provider=self.name, detail="BFL_API_KEY is not set")
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(self._request_timeout), headers={"x-key": self._api_key, "accept": "application/json"}
            )
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def validate(self, request: ImageRequest) -> None:
        width, height = parse_size(request.size)
        if width % 16 or height % 16 or min(width, height) < MIN_SIDE or width * height > MAX_PIXELS:
            raise InvalidRequest(
                f"Flux makes images with sides divisible by 16, at least {MIN_SIDE} px and up to 4 megapixels, "
                "for example 1280x720."
            )

    def estimate_cost(self, request: ImageRequest) -> float | None:
        return flux_cost(request.model or self.default_model, *parse_size(request.size), self._prices)

    async def generate(self, request: ImageRequest, dest: Path) -> ImageResult:
        model = request.model or self.default_model
        width, height = parse_size(request.size)
        body: dict[str, Any] = {"prompt": request.prompt, "width": width, "height": height, "output_format": "png"}
        if request.seed is not None:
            body["seed"] = request.seed
        # A create is sent once; only a 429 (nothing was made) is repeated.
        task = await retrying(lambda: self._submit(model, body), policy=self.policy, attempts=3, what="flux submit", provider=self.name)
        task_id, polling_url = str(task["id"]), str(task.get("polling_url") or f"{self._base_url}/v1/get_result?id={task['id']}")
        waiter = _FluxTask(self, {task_id: polling_url})
        await wait_for_completion(waiter, task_id, policy=self.policy)  # type: ignore[arg-type]
        sample = waiter.samples[task_id]
        data = await retrying(lambda: self._fetch(sample), policy=self.policy, attempts=3, what="flux sample")
        image = await asyncio.to_thread(_save_png, data, dest)
        return ImageResult(
            path=dest, width=image[0], height=image[1], model=model, remote_id=task_id,
            cost=flux_cost(model, width, height, self._prices),
        )  # fmt: skip

    async def _submit(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await self.http.post(f"{self._base_url}/v1/{model}", json=body)
        except httpx.ConnectError as exc:
            raise TransientError("Flux is not reachable.", provider=self.name, detail=repr(exc)) from exc
        except httpx.HTTPError as exc:
            raise _ambiguous(repr(exc)) from exc
        if response.status_code == 200:
            return dict(response.json())
        status, text = response.status_code, response.text[:500]
        if status == 429:
            raise RateLimited("Flux is busy.", retry_after=_retry_after(response), provider=self.name, detail=text)
        if status in (401, 403):
            raise NotConfigured("Flux refused the API key.", provider=self.name, detail=f"{status}: {text}")
        if status == 402:
            raise Unavailable("Flux has no credits left on this account.", provider=self.name, detail=text)
        if status == 404:
            raise Unavailable(f"Flux does not serve the model '{model}'.", provider=self.name, detail=text)
        if status == 503:
            raise TransientError("Flux is unavailable.", provider=self.name, detail=text)
        if status >= 500:
            raise _ambiguous(f"{status}: {text}")
        raise ProviderInvalidRequest("Flux refused the request.", provider=self.name, detail=f"{status}: {text}")

    async def _fetch(self, url: str) -> bytes:
        try:
            # The sample is a signed URL on a CDN: no API key goes with it.
            async with httpx.AsyncClient(timeout=httpx.Timeout(self._request_timeout)) as client:
                response = await client.get(url)
        except httpx.HTTPError as exc:
            raise TransientError("The Flux download was interrupted.", provider=self.name, detail=repr(exc)) from exc
        if response.status_code in (403, 404, 410):
            raise ContentExpired("Flux's link to the image expired; try again.", provider=self.name)
        if response.status_code >= 500 or response.status_code == 429:
            raise TransientError("The Flux download failed.", provider=self.name, detail=str(response.status_code))
        if response.status_code != 200:
            raise ProviderError("The Flux download failed.", provider=self.name, detail=str(response.status_code))
        return response.content


class _FluxTask:
    """A BFL task seen as a remote job, so the one polling engine can wait on it."""

    def __init__(self, provider: FluxImageProvider, polling_urls: dict[str, str]) -> None:
        self.provider = provider
        self.name = provider.name
        self.polling_urls = polling_urls
        self.samples: dict[str, str] = {}

    async def poll(self, remote_id: str) -> RemoteJob:
        try:
            response = await self.provider.http.get(self.polling_urls[remote_id])
        except httpx.HTTPError as exc:
            raise TransientError("Flux did not answer.", provider=self.name, detail=repr(exc)) from exc
        if response.status_code == 429:
            raise RateLimited("Flux is busy.", retry_after=_retry_after(response), provider=self.name)
        if response.status_code >= 500:
            raise TransientError("Flux is having trouble.", provider=self.name, detail=str(response.status_code))
        if response.status_code in (401, 403):
            raise NotConfigured("Flux refused the API key.", provider=self.name)
        body = response.json() if response.status_code == 200 else {"status": "Task not found"}
        status = body.get("status")
        if status == "Ready":
            self.samples[remote_id] = body["result"]["sample"]
            return RemoteJob(id=remote_id, status=RemoteStatus.COMPLETED, progress=100)
        if status in ("Pending", "Queued"):
            progress = int(float(body.get("progress") or 0) * 100) if body.get("progress") is not None else 0
            return RemoteJob(id=remote_id, status=RemoteStatus.IN_PROGRESS, progress=min(max(progress, 0), 99))
        return RemoteJob(
            id=remote_id, status=RemoteStatus.FAILED, error_code=str(status),
            error_message=str((body.get("details") or {}).get("message") or status) if isinstance(body.get("details"), dict) else str(status),
        )  # fmt: skip

    def error_for(self, job: RemoteJob) -> Exception:
        if job.error_code in MODERATED:
            return ContentPolicyRejected("the image was moderated", provider=self.name, detail=job.error_code)
        return GenerationFailed("Flux could not make the first frame.", remote_code=job.error_code, provider=self.name)

    async def cancel(self, remote_id: str) -> None:
        """BFL has no cancel; an unfinished task simply expires."""


def _save_png(data: bytes, dest: Path) -> tuple[int, int]:
    image = decode_image(data, name="flux sample")
    out = io.BytesIO()
    image.save(out, "PNG")
    dest.write_bytes(out.getvalue())
    return image.size


def _ambiguous(detail: str) -> ProviderError:
    return ProviderError(
        "Flux did not confirm the image request; it was not sent again so you are not billed twice. Try again.",
        provider="flux", detail=detail,
    )  # fmt: skip


def _retry_after(response: httpx.Response) -> float | None:
    try:
        value = response.headers.get("retry-after")
        return float(value) if value is not None else None
    except ValueError:
        return None
