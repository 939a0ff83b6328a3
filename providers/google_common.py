"""What the Google providers share: one way to build a `google-genai` client, one error mapping,
sizes as Google's aspect ratios and resolutions, prices as data.

The client is built with `retry_options.attempts=1`: google-genai repeats 408/409/429/5xx
(five attempts by default, for the Interactions API too), and a repeated create may make, and
bill, a second video. Reads are repeated by `providers.polling`, the one engine for that.

Two error families come out of the SDK: `google.genai.errors.APIError` (models, operations:
`code`, `status`, `message`) and the Interactions API's own (`status_code`, `body`); transport
failures are httpx/httpx2 errors, or the Interactions API's `APIConnectionError`.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from providers.base import parse_size
from providers.errors import (
    ContentPolicyRejected,
    InvalidRequest,
    ModelUnavailable,
    NotConfigured,
    ProviderError,
    ProviderInvalidRequest,
    RateLimited,
    TransientError,
)

log = logging.getLogger(__name__)

#: Words Google uses when a prompt, an input or an output is blocked by its safety filters
#: (`SAFETY`, `PROHIBITED_CONTENT`, "blocked by Responsible AI practices", "IMAGE_SAFETY"...).
_SAFETY_RE = re.compile(
    r"safety|prohibited|blocklist|responsible ai|\brai\b|usage guidelines|content polic|spii|csam|"
    r"sensitive words|filtered|blocked",
    re.IGNORECASE,
)


def is_safety(*texts: object) -> bool:
    return any(_SAFETY_RE.search(str(t)) for t in texts if t)


# --- clients ----------------------------------------------------------------------------------


def http_options(base_url: str | None, timeout_seconds: float) -> Any:
    from google.genai import types

    return types.HttpOptions(
        base_url=base_url or None,
        timeout=int(timeout_seconds * 1000),
        retry_options=types.HttpRetryOptions(attempts=1),
    )


def gemini_client(api_key: str, *, base_url: str | None, timeout: float) -> Any:
    """The Gemini Developer API (an API key), never Vertex whatever the environment says."""
    from google import genai

    return genai.Client(vertexai=False, api_key=api_key, http_options=http_options(base_url, timeout))


def vertex_client(
    *, project: str, location: str, access_token: str | None, base_url: str | None, timeout: float
) -> Any:
    """Vertex AI. With `access_token` the SDK sends it as it is (no ADC lookup, no refresh: an
    operator's `gcloud auth print-access-token`, or a test's); without, application default
    credentials (GOOGLE_APPLICATION_CREDENTIALS, the metadata server, gcloud's login)."""
    from google import genai

    credentials = None
    if access_token:
        import google.oauth2.credentials

        credentials = google.oauth2.credentials.Credentials(token=access_token)
    return genai.Client(
        vertexai=True, project=project, location=location, credentials=credentials,
        http_options=http_options(base_url, timeout),
    )  # fmt: skip


async def close_client(client: Any) -> None:
    """Close a client's async transport. Best effort: it is shutting down, and a failure to
    close must not hide why (or stop the other providers closing)."""
    try:
        await client.aio.aclose()
    except Exception:
        log.debug("closing the genai client failed", exc_info=True)


# --- sizes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    aspect_ratio: str
    resolution: str


#: The bot's sizes as Google's (aspect ratio, resolution) pairs, for Veo and Gemini Omni.
VIDEO_SHAPES: dict[str, Shape] = {
    "1280x720": Shape("16:9", "720p"),
    "720x1280": Shape("9:16", "720p"),
    "1920x1080": Shape("16:9", "1080p"),
    "1080x1920": Shape("9:16", "1080p"),
    "3840x2160": Shape("16:9", "4k"),
    "2160x3840": Shape("9:16", "4k"),
    "640x360": Shape("16:9", "360p"),
    "360x640": Shape("9:16", "360p"),
}


def shape_for(size: str, allowed: tuple[str, ...], who: str) -> Shape:
    width, height = parse_size(size)
    key = f"{width}x{height}"
    if key not in allowed or key not in VIDEO_SHAPES:
        raise InvalidRequest(f"{who} makes videos of size {', '.join(allowed)}.")
    return VIDEO_SHAPES[key]


#: Gemini image models' aspect ratios (imageConfig.aspectRatio).
IMAGE_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
#: gemini-2.5-flash-image's output size for each ratio (Google's table); other models scale it.
IMAGE_SIZES = {
    "1:1": (1024, 1024), "2:3": (832, 1248), "3:2": (1248, 832), "3:4": (864, 1184), "4:3": (1184, 864),
    "4:5": (896, 1152), "5:4": (1152, 896), "9:16": (768, 1344), "16:9": (1344, 768), "21:9": (1536, 672),
}  # fmt: skip


def nearest_ratio(width: int, height: int) -> str:
    target = width / height
    return min(IMAGE_RATIOS, key=lambda r: abs(_ratio_value(r) - target) / target)


def _ratio_value(ratio: str) -> float:
    w, _, h = ratio.partition(":")
    return int(w) / int(h)


# --- prices -----------------------------------------------------------------------------------


def price_per_second(prices: dict[str, float], model: str, *, audio: bool, resolution: str | None = None) -> float | None:
    """The most specific price: `MODEL@RES+audio`, `MODEL+audio`, `MODEL@RES`, then `MODEL`."""
    keys: list[str] = []
    if audio:
        keys += [f"{model}@{resolution}+audio"] if resolution else []
        keys.append(f"{model}+audio")
    keys += [f"{model}@{resolution}"] if resolution else []
    keys.append(model)
    return next((prices[k] for k in keys if k in prices), None)


def seconds_list(text: str) -> tuple[int, ...]:
    return tuple(sorted({int(s) for s in text.replace(" ", "").split(",") if s}))


def span(values: tuple[int, ...]) -> str:
    if len(values) == 1:
        return str(values[0])
    return ", ".join(str(v) for v in values[:-1]) + f" or {values[-1]}"


# --- errors -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """One SDK exception, read the same way whichever part of the SDK raised it."""

    status: int | None
    reason: str
    message: str
    retry_after: float | None
    connect: bool
    transport: bool


def read_error(exc: BaseException) -> Failure:
    status: int | None = None
    reason = ""
    message = ""
    code = getattr(exc, "status_code", None)
    if isinstance(code, int):
        status = code
    elif isinstance(getattr(exc, "code", None), int):
        status = int(exc.code)  # type: ignore[attr-defined]
    reason = str(getattr(exc, "status", "") or "")
    message = str(getattr(exc, "message", "") or "")
    body = getattr(exc, "body", None) if not message else None
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            message = body[:300]
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            message = str(error.get("message") or message)
            reason = str(error.get("status") or reason)
    response = getattr(exc, "response", None)
    retry_after = None
    headers = getattr(response, "headers", None)
    if headers is not None:
        try:
            value = headers.get("retry-after")
            retry_after = float(value) if value is not None else None
        except (TypeError, ValueError):
            retry_after = None
    name = type(exc).__name__
    cause = exc.__cause__
    transport = status is None and (
        "Connection" in name or "Timeout" in name or _is_httpx(exc) or (cause is not None and _is_httpx(cause))
    )
    connect = transport and any("ConnectError" in type(e).__name__ for e in (exc, cause) if e is not None)
    return Failure(status, reason, message or str(exc)[:300], retry_after, connect, transport)


def _is_httpx(exc: BaseException) -> bool:
    module = type(exc).__module__ or ""
    return module.startswith(("httpx", "httpx2", "httpcore", "aiohttp"))


def map_error(
    exc: BaseException, *, provider: str, label: str, create: bool, model_setting: str = "", model: str = ""
) -> Exception:
    """The taxonomy error for one failed SDK call. On a create, anything that may have reached
    the server and made a job is ambiguous and must not be repeated."""
    f = read_error(exc)
    detail = f"{f.status} {f.reason}: {f.message}"[:500]
    if f.transport:
        if not create or f.connect:
            return TransientError(f"{label} did not answer.", provider=provider, detail=f"{type(exc).__name__}: {f.message}")
        return ambiguous(label, provider, f"create: {type(exc).__name__}: {f.message}")
    if f.status is None:
        if isinstance(exc, ValueError) and "only supported in" in str(exc):
            # The SDK refused before sending (e.g. Veo asked of the Gemini Developer API).
            return NotConfigured(f"{label} cannot run this here: {exc}", provider=provider, detail=str(exc))
        if isinstance(exc, ValueError):
            return ProviderInvalidRequest(f"{label} refused the request: {exc}", provider=provider, detail=str(exc)[:500])
        return ProviderError(f"{label} failed: {f.message}", provider=provider, detail=detail)
    if f.status == 429:
        return RateLimited(f"{label} is over its limit.", retry_after=f.retry_after, provider=provider, detail=detail)
    if f.status >= 500:
        if create and f.status not in (503,):
            return ambiguous(label, provider, f"create {detail}")
        return TransientError(f"{label} is having trouble.", provider=provider, detail=detail)
    if (f.status in (401, 403) and not is_safety(f.message)) or "API key not valid" in f.message or "API_KEY_INVALID" in f.message:
        return NotConfigured(f"{label} refused the credentials.", provider=provider, detail=detail)
    if f.status == 404 and create:
        where = f" (set {model_setting})" if model_setting else ""
        return ModelUnavailable(f"{label} does not know the model '{model}'{where}.", provider=provider, detail=detail)
    if is_safety(f.message, f.reason):
        return ContentPolicyRejected(f"{label} refused this: {f.message}", provider=provider, detail=detail)
    return ProviderInvalidRequest(f"{label} refused the request: {f.message}", provider=provider, detail=detail)


def ambiguous(label: str, provider: str, detail: str) -> ProviderError:
    return ProviderError(
        f"{label} did not confirm the job, so it may or may not have started. It was not sent again, "
        "so you are not billed twice: re-roll to try again.",
        provider=provider,
        detail=detail,
    )


# --- media ------------------------------------------------------------------------------------


def jpeg_bytes(data: bytes, name: str, width: int, height: int) -> bytes:
    """An input image cropped to the video's shape, as a JPEG (blocking: run in a thread)."""
    import io

    from providers.media import crop_to_size, decode_image

    image = crop_to_size(decode_image(data, name=name), width, height)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def image_jpeg(image: Any, width: int, height: int) -> bytes:
    import io

    from providers.media import crop_to_size

    out = io.BytesIO()
    crop_to_size(image, width, height).save(out, "JPEG", quality=90)
    return out.getvalue()


def finish_extend(source: Path, downloaded: Path, dest: Path, seconds: int) -> bool:
    """An extension as the whole clip: what Google returns when it is the source plus the new
    seconds (Veo does), else the source joined to the new segment. True when it joined."""
    import shutil

    from providers.media import concat_videos, probe_video

    before = probe_video(source).duration
    after = probe_video(downloaded).duration
    if after >= before + seconds / 2:
        shutil.move(str(downloaded), str(dest))
        return False
    concat_videos(source, downloaded, dest)
    downloaded.unlink(missing_ok=True)
    return True
