"""Turning a chat prompt into a good first frame for a video model.

The seeds' DALL-E → Runway path asked the image model for a "film still" with a
clear subject, because an image-to-video model animates what it is given: a busy,
flat or off-centre still makes a muddled clip. Unlike the seeds we never pick
modifiers at random: the same prompt always gives the same image request, so a
re-roll changes the seed, not the wording.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

from providers.base import ImageProvider, ImageRequest, ImageResult, parse_size
from providers.errors import InvalidRequest
from providers.media import crop_to_size, decode_image

#: (words that show the prompt already covers it, the phrase added when it does not)
_MODIFIERS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("cinematic", "composition", "shot", "framing"), "cinematic composition"),
    (("lighting", "light", "lit ", "sunset", "golden hour", "neon"), "consistent natural lighting"),
    (("focal point", "focus on", "close-up", "closeup", "portrait of"), "one clear focal point"),
    (("film still", "still frame"), "film still"),
)
_ORIENTATION = {"landscape": "wide establishing shot", "portrait": "vertical framing", "square": "centred framing"}
#: Image APIs cap prompts; leave the user's words whole and drop modifiers first.
MAX_IMAGE_PROMPT = 1000


def orientation(width: int, height: int) -> str:
    if width > height * 1.1:
        return "landscape"
    if height > width * 1.1:
        return "portrait"
    return "square"


def enhance_for_video(prompt: str, width: int, height: int) -> str:
    """The prompt plus what helps a still become a clip; deterministic, skips what is already said."""
    text = " ".join(prompt.split()).rstrip(" .,")
    lower = f"{text.lower()} "
    extra = [phrase for words, phrase in _MODIFIERS if not any(w in lower for w in words)]
    extra.append(_ORIENTATION[orientation(width, height)])
    extra.append("high detail, no text or watermarks")
    out = text
    for phrase in extra:
        candidate = f"{out}, {phrase}"
        if len(candidate) > MAX_IMAGE_PROMPT:
            break
        out = candidate
    return out[:MAX_IMAGE_PROMPT]


#: Sizes most text-to-image APIs accept, tried when the exact video size is refused.
_COMMON_SIZES = {"landscape": "1536x1024", "portrait": "1024x1536", "square": "1024x1024"}


class FirstFrameImages(ImageProvider):
    """Wraps a text-to-image provider for a pipeline's image step: the prompt is written
    for video, and the image comes back smart-cropped to the video's exact size."""

    def __init__(self, inner: ImageProvider) -> None:
        self.inner = inner
        self.name = inner.name
        self.default_model = inner.default_model
        self.default_size = inner.default_size

    def _inner_request(self, request: ImageRequest) -> ImageRequest:
        width, height = parse_size(request.size)
        enhanced = request.model_copy(update={"prompt": enhance_for_video(request.prompt, width, height)})
        try:
            self.inner.validate(enhanced)
            return enhanced
        except InvalidRequest:
            # The model has fixed sizes: ask for the nearest shape, then crop.
            fallback = enhanced.model_copy(update={"size": _COMMON_SIZES[orientation(width, height)]})
            self.inner.validate(fallback)
            return fallback

    def validate(self, request: ImageRequest) -> None:
        self._inner_request(request)

    def estimate_cost(self, request: ImageRequest) -> float | None:
        return self.inner.estimate_cost(self._inner_request(request))

    async def generate(self, request: ImageRequest, dest: Path) -> ImageResult:
        width, height = parse_size(request.size)
        inner_request = self._inner_request(request)
        result = await self.inner.generate(inner_request, dest)
        if (result.width, result.height) != (width, height):
            await asyncio.to_thread(_crop_in_place, dest, width, height)
        return result.model_copy(update={"path": dest, "width": width, "height": height})

    async def aclose(self) -> None:
        await self.inner.aclose()


def _crop_in_place(path: Path, width: int, height: int) -> None:
    image = crop_to_size(decode_image(path.read_bytes(), name=path.name), width, height)
    image.save(path, "PNG")
