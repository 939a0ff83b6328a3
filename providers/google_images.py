"""Gemini image models (`gemini-2.5-flash-image`, `gemini-3-pro-image`, ...) through
`models.generate_content` (`:generateContent`) with the official `google-genai` SDK.

The image comes back inline (a part's `inlineData`) at the model's own size for the nearest of
its aspect ratios (`imageConfig.aspectRatio`); as the image step of a chain it is then cropped
to the video's exact size by `FirstFrameImages`. A blocked prompt (`promptFeedback.blockReason`)
or a filtered image (`finishReason` SAFETY, IMAGE_SAFETY, PROHIBITED_CONTENT...) is a
content-policy refusal, never retried.

Runs on the Gemini Developer API with an API key, else on Vertex AI when that is configured.
"""
from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from providers.base import ImageProvider, ImageRequest, ImageResult, parse_size
from providers.errors import ContentPolicyRejected, GenerationFailed, InvalidRequest, NotConfigured, OutputInvalid
from providers.google_common import close_client, is_safety, map_error, nearest_ratio
from providers.polling import PollPolicy, retrying

DEFAULT_MODEL = "gemini-2.5-flash-image"
LABEL = "Gemini"
MAX_PROMPT_CHARS = 8000
#: Finish reasons that mean the image was withheld by a filter, not that something broke.
_REFUSALS = {"SAFETY", "IMAGE_SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "RECITATION", "IMAGE_PROHIBITED_CONTENT",
             "IMAGE_RECITATION"}  # fmt: skip


class GeminiImageProvider(ImageProvider):
    name = "gemini-image"
    default_size = "1344x768"

    def __init__(
        self,
        *,
        client_factory: Callable[[], Any] | None,
        not_configured: str = "",
        model: str = DEFAULT_MODEL,
        prices: dict[str, float] | None = None,
        policy: PollPolicy | None = None,
    ) -> None:
        self._factory = client_factory
        self._not_configured = not_configured
        self.default_model = model
        self.prices = dict(prices or {})
        self.policy = policy or PollPolicy()
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._factory is None or self._not_configured:
            raise NotConfigured("Gemini images are not configured.", provider=self.name,
                                detail=self._not_configured or "no Gemini API key or Vertex project")  # fmt: skip
        if self._client is None:
            self._client = self._factory()
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await close_client(self._client)
            self._client = None

    def validate(self, request: ImageRequest) -> None:
        width, height = parse_size(request.size)
        if len(request.prompt) > MAX_PROMPT_CHARS:
            raise InvalidRequest(f"Gemini takes image prompts of up to {MAX_PROMPT_CHARS} characters.")
        if not 1 / 3 <= width / height <= 3:
            raise InvalidRequest("Gemini makes images between 1:3 and 3:1 (for example 1344x768 or 768x1344).")

    def estimate_cost(self, request: ImageRequest) -> float | None:
        return self.prices.get(request.model or self.default_model)

    async def generate(self, request: ImageRequest, dest: Path) -> ImageResult:
        from google.genai import types

        model = request.model or self.default_model
        ratio = nearest_ratio(*parse_size(request.size))
        config: dict[str, Any] = {"response_modalities": ["IMAGE"], "image_config": types.ImageConfig(aspect_ratio=ratio)}
        if request.seed is not None:
            config["seed"] = request.seed % 2_147_483_648
        models = self.client.aio.models

        async def once() -> Any:
            try:
                return await models.generate_content(model=model, contents=request.prompt,
                                                     config=types.GenerateContentConfig(**config))  # fmt: skip
            except Exception as exc:
                raise map_error(exc, provider=self.name, label=LABEL, create=True,
                                model_setting="GOOGLE_IMAGE_MODEL", model=model) from exc  # fmt: skip

        response = await retrying(once, policy=self.policy, attempts=3, what="gemini image")
        data = _image_bytes(response)
        image = await asyncio.to_thread(_save_png, data, dest)
        return ImageResult(path=dest, width=image[0], height=image[1], model=model, cost=self.prices.get(model),
                           remote_id=getattr(response, "response_id", None))  # fmt: skip


def _image_bytes(response: Any) -> bytes:
    feedback = getattr(response, "prompt_feedback", None)
    block = getattr(feedback, "block_reason", None) if feedback is not None else None
    if block:
        message = getattr(feedback, "block_reason_message", None) or f"the prompt was blocked ({_name(block)})"
        raise ContentPolicyRejected(f"Gemini refused this: {message}.", provider="gemini-image", detail=_name(block))
    reason = ""
    for candidate in getattr(response, "candidates", None) or []:
        content = getattr(candidate, "content", None)
        for part in (getattr(content, "parts", None) or []) if content is not None else []:
            inline = getattr(part, "inline_data", None)
            if inline is not None and inline.data and str(inline.mime_type or "").startswith("image/"):
                return bytes(inline.data)
        reason = reason or _name(getattr(candidate, "finish_reason", None))
        message = getattr(candidate, "finish_message", None)
        if reason in _REFUSALS or is_safety(message):
            raise ContentPolicyRejected(f"Gemini refused this: {message or f'the image was withheld ({reason})'}.",
                                        provider="gemini-image", detail=reason)  # fmt: skip
    raise GenerationFailed("Gemini answered without an image.", remote_code=reason or "no_image", provider="gemini-image")


def _name(value: object) -> str:
    return str(getattr(value, "value", value) or "")


def _save_png(data: bytes, dest: Path) -> tuple[int, int]:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as exc:  # Pillow raises several kinds for a broken file
        raise OutputInvalid("Gemini returned an image that cannot be read.", provider="gemini-image", detail=repr(exc)) from exc
    image.convert("RGB").save(dest, "PNG")
    return image.size


__all__ = ["GeminiImageProvider", "DEFAULT_MODEL"]
