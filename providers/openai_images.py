"""GPT image models (`POST /v1/images/generations`): text to a PNG still.

The response carries the image inline as `b64_json` (GPT image models never return URLs) and
its token usage, which is what the call cost.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import io
import re
from pathlib import Path

import openai

from providers.base import ImageProvider, ImageRequest, ImageResult, parse_size
from providers.errors import InvalidRequest, ModelUnavailable, NotConfigured, OutputInvalid
from providers.media import decode_image
from providers.openai_common import make_client, reraise

FIXED_SIZES = ("1024x1024", "1536x1024", "1024x1536")
QUALITIES = ("low", "medium", "high", "auto")
#: Models that take any WxH within the limits below (PLATFORM_NOTES: gpt-image-2 and 2.5).
_FLEXIBLE = re.compile(r"^gpt-image-2(\.5)?(-|$)")
MAX_LONG_SIDE, MAX_SHORT_SIDE, SIDE_STEP = 3840, 2160, 16
#: Output tokens of a 1024x1024 image by quality, for the estimate before sending; the
#: actual cost comes from the response's usage.
_EST_OUTPUT_TOKENS = {"low": 272, "medium": 1056, "high": 4160, "auto": 1056}


def size_allowed(model: str, size: str) -> bool:
    if size == "auto" or size in FIXED_SIZES:
        return True
    if not _FLEXIBLE.match(model):
        return False
    try:
        width, height = parse_size(size)
    except InvalidRequest:
        return False
    return (
        width % SIDE_STEP == 0 and height % SIDE_STEP == 0
        and max(width, height) <= MAX_LONG_SIDE and min(width, height) <= MAX_SHORT_SIDE
        and 1 / 3 <= width / height <= 3
    )  # fmt: skip


class OpenAIImageProvider(ImageProvider):
    name = "gpt-image"
    default_size = "1024x1024"

    def __init__(
        self,
        *,
        api_key: str | None,
        base_url: str | None = None,
        model: str = "gpt-image-2",
        quality: str = "auto",
        timeout: float = 120.0,
        token_prices: dict[str, dict[str, float]] | None = None,
        retired_models: frozenset[str] = frozenset(),
        snap_size: bool = False,
    ) -> None:
        self.default_model = model
        self.quality = quality
        self._api_key = api_key
        self._base_url = base_url
        self._timeout = timeout
        self._prices = dict(token_prices or {})
        self._retired = retired_models
        #: As the first frame of a video the frame is cropped to the video's size afterwards,
        #: so a size the model does not take is replaced by the allowed one closest in shape.
        self.snap_size = snap_size
        self._client: openai.AsyncOpenAI | None = None

    @property
    def client(self) -> openai.AsyncOpenAI:
        if self._client is None:
            if not self._api_key:
                raise NotConfigured(f"The {self.name} pipeline is not configured.", provider=self.name, detail="set OPENAI_API_KEY")
            self._client = make_client(self._api_key, self._base_url, self._timeout)
        return self._client

    def _model(self, request: ImageRequest) -> str:
        return request.model or self.default_model

    def _size(self, request: ImageRequest) -> str:
        size = request.size.lower()
        if self.snap_size and not size_allowed(self._model(request), size):
            width, height = parse_size(size)
            ratio = width / height
            return min(FIXED_SIZES, key=lambda s: abs(parse_size(s)[0] / parse_size(s)[1] - ratio))
        return size

    def validate(self, request: ImageRequest) -> None:
        model = self._model(request)
        if model in self._retired:
            raise ModelUnavailable(f"The image model '{model}' has been retired.", provider=self.name)
        if not model.startswith("gpt-image"):
            raise ModelUnavailable(f"'{model}' is not a GPT image model.", provider=self.name)
        size = self._size(request)
        if not size_allowed(model, size):
            if _FLEXIBLE.match(model):
                rule = (
                    f"{', '.join(FIXED_SIZES)}, auto, or any WxH with sides divisible by {SIDE_STEP}, "
                    f"a ratio between 1:3 and 3:1, up to {MAX_LONG_SIDE}x{MAX_SHORT_SIDE}"
                )
            else:
                rule = f"{', '.join(FIXED_SIZES)} or auto"
            raise InvalidRequest(f"{model} makes images of size {rule}.")
        quality = request.quality or self.quality
        if quality not in QUALITIES:
            raise InvalidRequest(f"Image quality is one of {', '.join(QUALITIES)}.")

    def estimate_cost(self, request: ImageRequest) -> float | None:
        prices = self._prices.get(self._model(request))
        if prices is None:
            return None
        size = self._size(request)
        width, height = (1024, 1024) if size == "auto" else parse_size(size)
        tokens = _EST_OUTPUT_TOKENS[request.quality or self.quality] * width * height / (1024 * 1024)
        return round(tokens * prices.get("output", 0.0) / 1e6, 4)

    async def generate(self, request: ImageRequest, dest: Path) -> ImageResult:
        """One request, never retried (it bills); the PNG is written to `dest`."""
        self.validate(request)
        model = self._model(request)
        try:
            response = await self.client.images.generate(
                model=model, prompt=request.prompt, size=self._size(request), quality=request.quality or self.quality,  # type: ignore[arg-type]
                n=1, output_format="png",
            )  # fmt: skip
        except Exception as exc:
            reraise(exc, provider=self.name, what="images.generate")
        item = response.data[0] if response.data else None
        if item is None or not item.b64_json:
            raise OutputInvalid("The provider returned no image.", provider=self.name)
        try:
            data = base64.b64decode(item.b64_json, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise OutputInvalid("The provider returned an unreadable image.", provider=self.name) from exc
        width, height = await asyncio.to_thread(_save_png, data, dest)
        return ImageResult(path=dest, width=width, height=height, model=model, cost=self._cost(model, response.usage))

    def _cost(self, model: str, usage: object) -> float | None:
        prices = self._prices.get(model)
        if prices is None or usage is None:
            return None
        details = getattr(usage, "input_tokens_details", None)
        text = getattr(details, "text_tokens", None)
        image = getattr(details, "image_tokens", None)
        input_tokens = int(getattr(usage, "input_tokens", 0) or 0)
        if text is None or image is None:
            text, image = input_tokens, 0
        output = int(getattr(usage, "output_tokens", 0) or 0)
        usd = (text * prices.get("text", 0.0) + image * prices.get("image", 0.0) + output * prices.get("output", 0.0)) / 1e6
        return round(usd, 6)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def _save_png(data: bytes, dest: Path) -> tuple[int, int]:
    try:
        image = decode_image(data, name="generated image")
    except InvalidRequest as exc:  # decode_image speaks to users about their uploads
        raise OutputInvalid("The provider returned an unreadable image.") from exc
    out = io.BytesIO()
    image.save(out, "PNG")
    dest.write_bytes(out.getvalue())
    return image.width, image.height
